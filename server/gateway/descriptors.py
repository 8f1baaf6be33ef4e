"""A field's message, enum and owning types, which protobuf's stubs type as optional.

`FieldDescriptor.message_type` is None unless the field is a message, `enum_type` unless it is an enum, and
`containing_type` is set for every field of a message (the gateway meets no other); these say so once instead of at
every use.
"""

from __future__ import annotations

from google.protobuf.descriptor import Descriptor, EnumDescriptor, FieldDescriptor


def message_type(field: FieldDescriptor) -> Descriptor:
    """The type of a message field; ValueError for any other kind."""
    if field.message_type is None:
        raise ValueError(f"{field.full_name} is not a message field")
    return field.message_type


def enum_type(field: FieldDescriptor) -> EnumDescriptor:
    """The type of an enum field; ValueError for any other kind."""
    if field.enum_type is None:
        raise ValueError(f"{field.full_name} is not an enum field")
    return field.enum_type


def owner(field: FieldDescriptor) -> Descriptor:
    """The message a field belongs to; ValueError for an extension declared outside one."""
    if field.containing_type is None:
        raise ValueError(f"{field.full_name} belongs to no message")
    return field.containing_type
