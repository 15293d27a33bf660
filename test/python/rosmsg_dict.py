"""Converting rclpy messages to and from plain dicts, field by field, using
only rosidl's own type descriptions (no code of ours under test)."""

import array
import importlib

from rosidl_parser.definition import AbstractNestedType, NamespacedType


def _message_class(t):
    mod = importlib.import_module(".".join(t.namespaces))
    return getattr(mod, t.name)


def to_dict(msg):
    out = {}
    for name in msg.get_fields_and_field_types():
        out[name] = _value_to_plain(getattr(msg, name))
    return out


def _value_to_plain(v):
    if hasattr(v, "get_fields_and_field_types"):
        return to_dict(v)
    if isinstance(v, (list, tuple)):
        return [_value_to_plain(x) for x in v]
    if isinstance(v, array.array):
        return list(v)
    if hasattr(v, "tolist"):  # numpy arrays for fixed-size fields
        return v.tolist()
    if isinstance(v, bytes):
        return list(v)
    return v


def from_dict(cls, d):
    msg = cls()
    fields = list(msg.get_fields_and_field_types())
    unknown = set(d) - set(fields)
    if unknown:
        raise KeyError(f"{cls.__name__} has no fields {sorted(unknown)}")
    for name, slot in zip(fields, cls.SLOT_TYPES):
        if name not in d:
            continue
        value = d[name]
        if isinstance(slot, NamespacedType):
            value = from_dict(_message_class(slot), value)
        elif isinstance(slot, AbstractNestedType) and isinstance(slot.value_type, NamespacedType):
            elem = _message_class(slot.value_type)
            value = [from_dict(elem, x) for x in value]
        setattr(msg, name, value)
    return msg
