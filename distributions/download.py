"""Fetch the official GENIES data tarball and unpack it into a data directory."""

from __future__ import annotations

import hashlib
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from distributions.split_file import validate_file
from distributions.data import list_distributions
from common import UserError

GENIES_TARBALL_URL = "https://genies-data.s3.us-east-2.amazonaws.com/genies-datasets.tar"
CHECKSUM_FILE = "genies-datasets.tar.sha256"


def download(data_dir: Path, url: str = GENIES_TARBALL_URL, timeout: float = 30.0) -> tuple[int, str]:
    """Download, check and unpack; returns (number of distributions, sha256 of the tarball).

    No checksum is published, so the first download records one in the data directory and
    later downloads are compared with it.
    """
    data_dir = Path(data_dir)
    manual = (
        f"download the tarball from {url} by hand and unpack it so that "
        f"{data_dir / 'distributions'} holds one folder per distribution (or pass --data-dir / set GENIES_DATA)"
    )
    with tempfile.TemporaryDirectory(prefix="genies-download-") as tmp:
        tarball = Path(tmp) / "genies-datasets.tar"
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(tarball, "wb") as out:
                shutil.copyfileobj(response, out)
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise UserError(f"{url}: cannot download ({reason}); {manual}") from None
        digest = hashlib.sha256(tarball.read_bytes()).hexdigest()
        recorded = data_dir / CHECKSUM_FILE
        if recorded.is_file() and recorded.read_text().split()[0] != digest:
            raise UserError(f"{url}: sha256 {digest} differs from the one recorded in {recorded}")
        unpacked = Path(tmp) / "unpacked"
        try:
            with tarfile.open(tarball) as archive:
                archive.extractall(unpacked, filter="data")
        except tarfile.TarError as err:
            raise UserError(f"{url}: not a readable tar archive ({err}); {manual}") from None
        root = find_data_root(unpacked)
        names = list_distributions(root)
        problems = [p for name in names for split in ("train", "test")
                    for p in validate_file(root / "distributions" / name / f"{split}.json")]
        if problems:
            raise UserError(f"{url}: the archive holds invalid data, e.g. {problems[0]}")
        data_dir.mkdir(parents=True, exist_ok=True)
        for child in root.iterdir():
            target = data_dir / child.name
            if target.exists():
                shutil.rmtree(target) if target.is_dir() else target.unlink()
            shutil.move(str(child), target)
        recorded.write_text(f"{digest}  {url}\n")
        return len(names), digest


def find_data_root(unpacked: Path) -> Path:
    """The directory inside an unpacked archive that holds ``distributions/``."""
    for candidate in [unpacked, *sorted(p for p in unpacked.rglob("*") if p.is_dir())]:
        if (candidate / "distributions").is_dir():
            return candidate
    raise UserError(f"{unpacked}: the archive has no distributions/ folder")
