"""Writing Spark results: :func:`write_parquet`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pyspark is an optional dependency
    from pyspark.sql import DataFrame


def write_parquet(frame: DataFrame, path: str | os.PathLike) -> None:
    """Write a Spark DataFrame as a Parquet directory, atomically on a local path.

    A local ``path`` is written into a hidden directory beside it, which is then renamed
    over it, so a failed job leaves the previous output as it was. A URI (``hdfs://``,
    ``s3a://``, ...) is written in place by Spark (``mode("overwrite")``).

    Raises
    ------
    ArtifactError
        The output cannot be written (Spark's or the file system's message is passed on).
    """
    import shutil
    import uuid

    from funnel.errors import ArtifactError

    text = os.fspath(path)
    if "://" in text and not text.startswith("file://"):
        frame.write.mode("overwrite").parquet(text)
        return
    target = Path(text.removeprefix("file://")).absolute()
    if target.is_file():
        raise ArtifactError(f"output {target} is a file; Spark writes a Parquet directory: give another path, "
                            "or remove the file")
    staged = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        frame.write.parquet(staged.as_uri())
        if target.exists():
            old = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
            target.rename(old)
            staged.rename(target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            staged.rename(target)
    except OSError as exc:
        raise ArtifactError(f"cannot write {target}: {exc.strerror or exc}") from exc
    finally:
        shutil.rmtree(staged, ignore_errors=True)
