"""The label store: a chunked Zarr v3 group of encoded teacher outputs with its provenance."""

from softlabels.format.encodings import (
    VALUE_DTYPES,
    Encoding,
    FieldSpec,
    FullEncoding,
    SampledEncoding,
    TopKEncoding,
    encoding_from_params,
    encoding_names,
    register_encoding,
)
from softlabels.format.schema import (
    FORMAT_NAME,
    FORMAT_VERSION,
    DatasetInfo,
    Layout,
    Provenance,
    StoreHeader,
    TeacherInfo,
    default_chunk_rows,
)
from softlabels.store.reader import LabelChunk, LabelStore, open_store, read_header
from softlabels.store.writer import StoreWriter, WriteSummary

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "VALUE_DTYPES",
    "DatasetInfo",
    "Encoding",
    "FieldSpec",
    "FullEncoding",
    "LabelChunk",
    "LabelStore",
    "Layout",
    "Provenance",
    "SampledEncoding",
    "StoreHeader",
    "StoreWriter",
    "WriteSummary",
    "TeacherInfo",
    "TopKEncoding",
    "default_chunk_rows",
    "encoding_from_params",
    "encoding_names",
    "open_store",
    "read_header",
    "register_encoding",
]
