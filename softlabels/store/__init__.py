"""The label store: a chunked Zarr v3 group of encoded teacher outputs with its provenance."""

from softlabels.store.encodings import Encoding, FieldSpec, FullEncoding, encoding_from_params, encoding_names, \
    register_encoding
from softlabels.store.reader import LabelChunk, LabelStore, open_store, read_header
from softlabels.store.schema import FORMAT_NAME, FORMAT_VERSION, DatasetInfo, Layout, Provenance, StoreHeader, \
    TeacherInfo
from softlabels.store.writer import StoreWriter

__all__ = [
    "FORMAT_NAME", "FORMAT_VERSION", "DatasetInfo", "Encoding", "FieldSpec", "FullEncoding", "LabelChunk",
    "LabelStore", "Layout", "Provenance", "StoreHeader", "StoreWriter", "TeacherInfo", "encoding_from_params",
    "encoding_names", "open_store", "read_header", "register_encoding",
]
