"""The region stack's function code: the ``annex_cloud`` package as one zip, content-addressed.

The same bytes for the same sources (sorted entries, fixed timestamps and modes), so the S3 key
changes exactly when the code does and an unchanged setup changes nothing. The suite imports the
functions from this very zip.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import annex_cloud
from annex_common.artifacts import Artifact

PACKAGE_ROOT = Path(annex_cloud.__file__).resolve().parent
SHIPPED_SUFFIXES = (".py", ".json", ".sh")
_FIXED_TIME = (2020, 1, 1, 0, 0, 0)


def package_files(root: Path = PACKAGE_ROOT) -> list[Path]:
    return sorted(
        path for path in root.rglob("*")
        if path.is_file() and path.suffix in SHIPPED_SUFFIXES and "__pycache__" not in path.parts
    )


def build_function_zip(root: Path = PACKAGE_ROOT) -> Artifact:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in package_files(root):
            name = f"{root.name}/{path.relative_to(root).as_posix()}"
            info = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes())
    body = buffer.getvalue()
    return Artifact(body, "functions/annex_cloud-", ".zip")
