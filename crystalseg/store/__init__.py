"""The run store: one zarr v3 group per recorded run.

:mod:`crystalseg.store.core` reads and writes the store's arrays, tables and
attributes; :mod:`crystalseg.store.stages` is the stage runner every stage
writes through (decide, record, resume, replace only when complete);
:mod:`crystalseg.store.lock` keeps one writer at a time.
"""

from crystalseg.store.core import (
    FORMAT_KEY,
    FORMAT_VERSION,
    MAX_FRAMES_PER_CHUNK,
    PROBABILITY_ATTRS,
    PROGRESS_GROUP,
    PROVENANCE_KEY,
    TARGET_CHUNK_BYTES,
    calibration_fingerprint,
    consolidate,
    create_array,
    crystalseg_version,
    default_compressor,
    default_frames_per_chunk,
    describe_run,
    get_array,
    open_run,
    read_run_attrs,
    read_table,
    stage_info,
    write_table,
)
from crystalseg.store.lock import read_lock, run_lock
from crystalseg.store.stages import (
    RunWriter,
    StagePlan,
    StageProgress,
    begin_stage,
    create_run,
    creating,
    plan_stage,
    recover_stages,
    set_calibration,
    writing,
)

__all__ = [
    "FORMAT_KEY",
    "FORMAT_VERSION",
    "MAX_FRAMES_PER_CHUNK",
    "PROBABILITY_ATTRS",
    "PROGRESS_GROUP",
    "PROVENANCE_KEY",
    "TARGET_CHUNK_BYTES",
    "RunWriter",
    "StagePlan",
    "StageProgress",
    "begin_stage",
    "calibration_fingerprint",
    "consolidate",
    "create_array",
    "create_run",
    "creating",
    "crystalseg_version",
    "default_compressor",
    "default_frames_per_chunk",
    "describe_run",
    "get_array",
    "open_run",
    "plan_stage",
    "read_lock",
    "read_run_attrs",
    "read_table",
    "recover_stages",
    "run_lock",
    "set_calibration",
    "stage_info",
    "write_table",
    "writing",
]
