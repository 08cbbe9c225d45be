"""SageMaker's ``Record`` protobuf schema (``aialgs.data``), built in code.

Provenance: the message and field definitions (names, numbers, types, ``packed``) are
those of ``record.proto`` in the SageMaker Python SDK (``src/sagemaker/amazon/
record.proto``, Apache-2.0), the schema of SageMaker's ``application/x-recordio-protobuf``
content type. They are written out here as a ``FileDescriptorProto`` so that no
generated ``_pb2`` module (tied to one protoc version) nor the SDK itself is needed;
the ``protobuf`` runtime, which apache-beam installs, builds the classes from it.

    message Float32Tensor { repeated float  values = 1 [packed]; repeated uint64 keys = 2 [packed];
                            repeated uint64 shape = 3 [packed]; }
    message Float64Tensor { repeated double values = 1 [packed]; ... same keys, shape }
    message Int32Tensor   { repeated int32  values = 1 [packed]; ... same keys, shape }
    message Bytes  { repeated bytes value = 1; optional string content_type = 2; }
    message Value  { oneof value { Float32Tensor float32_tensor = 2; Float64Tensor float64_tensor = 3;
                                   Int32Tensor int32_tensor = 7; Bytes bytes = 9; } }
    message Record { map<string, Value> features = 1; map<string, Value> label = 2;
                     optional string uid = 3; optional string metadata = 4;
                     optional string configuration = 5; }
"""

from __future__ import annotations

from functools import cache
from typing import Any

__all__ = ["record_class"]

_PACKAGE = "aialgs.data"


def _file_descriptor() -> Any:
    from google.protobuf import descriptor_pb2

    f = descriptor_pb2.FieldDescriptorProto
    optional, repeated = f.LABEL_OPTIONAL, f.LABEL_REPEATED
    proto = descriptor_pb2.FileDescriptorProto(
        name="beam_ml/sagemaker_record.proto", package=_PACKAGE, syntax="proto2"
    )

    def message(name: str) -> Any:
        msg = proto.message_type.add(name=name)
        return msg

    def field(
        msg: Any,
        name: str,
        number: int,
        kind: int,
        label: int = optional,
        type_name: str = "",
        packed: bool = False,
        oneof: int | None = None,
    ) -> None:
        fd = msg.field.add(name=name, number=number, type=kind, label=label)
        if type_name:
            fd.type_name = type_name
        if packed:
            fd.options.packed = True
        if oneof is not None:
            fd.oneof_index = oneof

    for name, kind in (
        ("Float32Tensor", f.TYPE_FLOAT),
        ("Float64Tensor", f.TYPE_DOUBLE),
        ("Int32Tensor", f.TYPE_INT32),
    ):
        tensor = message(name)
        field(tensor, "values", 1, kind, repeated, packed=True)
        field(tensor, "keys", 2, f.TYPE_UINT64, repeated, packed=True)
        field(tensor, "shape", 3, f.TYPE_UINT64, repeated, packed=True)
    raw = message("Bytes")
    field(raw, "value", 1, f.TYPE_BYTES, repeated)
    field(raw, "content_type", 2, f.TYPE_STRING)
    value = message("Value")
    value.oneof_decl.add(name="value")
    for name, number, type_name in (
        ("float32_tensor", 2, "Float32Tensor"),
        ("float64_tensor", 3, "Float64Tensor"),
        ("int32_tensor", 7, "Int32Tensor"),
        ("bytes", 9, "Bytes"),
    ):
        field(value, name, number, f.TYPE_MESSAGE, type_name=f".{_PACKAGE}.{type_name}", oneof=0)
    record = message("Record")
    for name, number in (("features", 1), ("label", 2)):
        entry_name = name.capitalize() + "Entry"
        entry = record.nested_type.add(name=entry_name)
        entry.options.map_entry = True
        field(entry, "key", 1, f.TYPE_STRING)
        field(entry, "value", 2, f.TYPE_MESSAGE, type_name=f".{_PACKAGE}.Value")
        field(
            record,
            name,
            number,
            f.TYPE_MESSAGE,
            repeated,
            type_name=f".{_PACKAGE}.Record.{entry_name}",
        )
    for name, number in (("uid", 3), ("metadata", 4), ("configuration", 5)):
        field(record, name, number, f.TYPE_STRING)
    return proto


@cache
def record_class() -> type:
    """The ``aialgs.data.Record`` message class (built once per process, in a pool of
    its own so it never clashes with another copy of the schema, e.g. the SDK's)."""
    from google.protobuf import descriptor_pool, message_factory

    pool = descriptor_pool.DescriptorPool()
    pool.Add(_file_descriptor())
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.Record"))
