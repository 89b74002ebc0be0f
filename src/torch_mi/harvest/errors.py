"""Typed errors of the harvest package (all MIError subclasses, so the CLI prints one line)."""

from __future__ import annotations

from ..errors import ConfigError, InputError, MIError


class HarvestError(MIError):
    """Base class of every harvest failure."""


class DatasetError(HarvestError, InputError):
    """The dataset cannot be read (missing, unreadable, undecodable, no text field) or holds
    no usable sequence."""


class ManifestMismatchError(HarvestError, ConfigError):
    """The output folder already holds a harvest of another model, dataset or setting."""


class ShardCorruptError(HarvestError):
    """A shard's bytes do not match the checksum recorded in the manifest."""


class EngineUnavailableError(HarvestError, ConfigError):
    """The requested engine needs an optional package that is not installed."""
