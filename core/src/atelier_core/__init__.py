"""Atelier core: the public API for provider plugins.

Everything a plugin author needs is importable from here; other modules are internal.
"""

from atelier_core.plugin.errors import (
    AtelierError,
    AuthenticationError,
    ConfigurationError,
    InputImageError,
    InvalidParameterError,
    MissingCredentialsError,
    NotFoundError,
    OutputPathError,
    QuotaExceededError,
    RateLimitedError,
    RequestError,
    RetiredModelError,
    SafetyRefusalError,
    SpendLimitError,
    StorageError,
    UnknownModelError,
    UnsupportedCapabilityError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamTimeoutError,
    UpstreamUnavailableError,
    retry_after_from_headers,
)
from atelier_core.plugin.hookspecs import hookimpl
from atelier_core.plugin.provider import CallContext, Provider, ProviderSettings
from atelier_core.plugin.spec import (
    CustomSizeRule,
    InputImageRules,
    MaskRules,
    ModelSpec,
    Operation,
    Pricing,
    RetiredModel,
    SizeRules,
)
from atelier_core.plugin.types import (
    ImageRequest,
    InputImage,
    ItemFailure,
    ProviderImage,
    ProviderResult,
    Usage,
)

__version__ = "0.1.0"

__all__ = [
    "AtelierError",
    "AuthenticationError",
    "CallContext",
    "ConfigurationError",
    "CustomSizeRule",
    "ImageRequest",
    "InputImage",
    "InputImageError",
    "InputImageRules",
    "InvalidParameterError",
    "ItemFailure",
    "MaskRules",
    "MissingCredentialsError",
    "ModelSpec",
    "NotFoundError",
    "Operation",
    "OutputPathError",
    "Pricing",
    "Provider",
    "ProviderImage",
    "ProviderResult",
    "ProviderSettings",
    "QuotaExceededError",
    "RateLimitedError",
    "RequestError",
    "RetiredModel",
    "RetiredModelError",
    "SafetyRefusalError",
    "SizeRules",
    "SpendLimitError",
    "StorageError",
    "UnknownModelError",
    "UnsupportedCapabilityError",
    "UpstreamError",
    "UpstreamProtocolError",
    "UpstreamTimeoutError",
    "UpstreamUnavailableError",
    "Usage",
    "hookimpl",
    "retry_after_from_headers",
]
