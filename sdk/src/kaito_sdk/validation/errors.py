"""The error and warning types validation rules report, and the name rules they share."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

__all__ = [
    "DNS1123_LABEL_MAX",
    "DNS1123_SUBDOMAIN_MAX",
    "FieldError",
    "FieldWarning",
    "dns1123_label_problem",
    "dns1123_subdomain_problem",
    "label_key_problem",
    "label_value_problem",
]

DNS1123_LABEL_MAX: Final = 63
DNS1123_SUBDOMAIN_MAX: Final = 253
_DNS1123_LABEL: Final = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN: Final = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_LABEL_NAME: Final = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")


@dataclass(frozen=True, slots=True)
class FieldError:
    """One broken rule: the field's wire path (``inference.adapters[1].strength``) and why."""

    path: str
    """Path of the field in the manifest, camelCase, with ``[i]`` for list items."""
    message: str
    """What rule the value breaks."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


@dataclass(frozen=True, slots=True)
class FieldWarning:
    """Something KAITO accepts and so do we, that will not do what the user may expect.

    Admission lets the object in and returns the warning (``kubectl`` prints it);
    ``kaito validate`` prints it and still exits 0.
    """

    path: str
    """Path of the field in the manifest, camelCase, with ``[i]`` for list items."""
    message: str
    """What will happen, and how to avoid it."""

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


def dns1123_label_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS-1123 label, or None when it is one."""
    if len(value) > DNS1123_LABEL_MAX:
        return f"must be a DNS-1123 label of at most {DNS1123_LABEL_MAX} characters"
    if not _DNS1123_LABEL.match(value):
        return (
            f"{value!r} is not a DNS-1123 label (lower-case letters, digits and '-', "
            "starting and ending with a letter or digit)"
        )
    return None


def dns1123_subdomain_problem(value: str) -> str | None:
    """Why ``value`` is not a DNS-1123 subdomain, or None when it is one."""
    if len(value) > DNS1123_SUBDOMAIN_MAX:
        return f"must be a DNS-1123 subdomain of at most {DNS1123_SUBDOMAIN_MAX} characters"
    if not _DNS1123_SUBDOMAIN.match(value):
        return (
            f"{value!r} is not a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', "
            "starting and ending with a letter or digit)"
        )
    return None


def label_key_problem(key: str) -> str | None:
    """Why ``key`` is not a valid label key (``[prefix/]name``), or None."""
    prefix, _, name = key.rpartition("/")
    if prefix and dns1123_subdomain_problem(prefix) is not None:
        return f"label key {key!r} has a prefix that is not a DNS-1123 subdomain"
    if len(name) > DNS1123_LABEL_MAX or not _LABEL_NAME.match(name):
        return (
            f"label key {key!r} is not valid (a name of at most 63 letters, digits, '-', '_' "
            "or '.', starting and ending with a letter or digit, with an optional prefix)"
        )
    return None


def label_value_problem(value: str) -> str | None:
    """Why ``value`` is not a valid label value, or None."""
    if value and (len(value) > DNS1123_LABEL_MAX or not _LABEL_NAME.match(value)):
        return (
            f"label value {value!r} is not valid (at most 63 letters, digits, '-', '_' or '.', "
            "starting and ending with a letter or digit)"
        )
    return None
