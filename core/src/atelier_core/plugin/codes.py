"""The one list of error codes Atelier reports (re-exported by :mod:`atelier_core.plugin.errors`)."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["ErrorCode"]


class ErrorCode(StrEnum):
    """Every error code Atelier reports, grouped by the class that carries it.

    The first code of each group is the class's own; the others are refinements that
    class (and only that class) may carry. Values are stable: clients may branch on them.
    """

    # AtelierError
    ERROR = "error"
    JOBS_BUSY = "jobs_busy"
    INTERNAL_ERROR = "internal_error"
    # RequestError
    INVALID_REQUEST = "invalid_request"
    IDEMPOTENCY_CONFLICT = "idempotency_conflict"
    SESSION_ENDED = "session_ended"
    RESOURCE_TOO_LARGE = "resource_too_large"
    # UnknownModelError, RetiredModelError, UnsupportedCapabilityError
    UNKNOWN_MODEL = "unknown_model"
    RETIRED_MODEL = "retired_model"
    UNSUPPORTED_CAPABILITY = "unsupported_capability"
    # InvalidParameterError
    INVALID_PARAMETER = "invalid_parameter"
    AMBIGUOUS_MODEL = "ambiguous_model"
    UNSUPPORTED_PARAMETER = "unsupported_parameter"
    SIZE_NOT_SUPPORTED = "size_not_supported"
    SEED_OUT_OF_RANGE = "seed_out_of_range"
    TOO_MANY_IMAGES = "too_many_images"
    INVALID_RESOURCE_URI = "invalid_resource_uri"
    # InputImageError
    INVALID_INPUT_IMAGE = "invalid_input_image"
    EMPTY_IMAGE_FILE = "empty_image_file"
    FAILED_TO_DOWNLOAD_IMAGE = "failed_to_download_image"
    IMAGE_FILE_NOT_FOUND = "image_file_not_found"
    IMAGE_FILE_TOO_LARGE = "image_file_too_large"
    IMAGE_NOT_SQUARE = "image_not_square"
    IMAGE_PARSE_ERROR = "image_parse_error"
    IMAGE_TOO_MANY_PIXELS = "image_too_many_pixels"
    INPUT_PATH_OUTSIDE_ROOT = "input_path_outside_root"
    INVALID_IMAGE_REFERENCE = "invalid_image_reference"
    INVALID_BASE64_IMAGE = "invalid_base64_image"
    CALL_INPUTS_TOO_LARGE = "call_inputs_too_large"
    MASK_HAS_NO_TRANSPARENCY = "mask_has_no_transparency"
    MASK_MUST_BE_PNG = "mask_must_be_png"
    MASK_NEEDS_ALPHA = "mask_needs_alpha"
    MASK_OR_TRANSPARENCY_REQUIRED = "mask_or_transparency_required"
    MASK_SIZE_MISMATCH = "mask_size_mismatch"
    REMOTE_TIMEOUT = "remote_timeout"
    SESSION_IMAGE_CHANGED = "session_image_changed"
    UNSUPPORTED_IMAGE_FORMAT = "unsupported_image_format"
    UNSUPPORTED_IMAGE_MEDIA_TYPE = "unsupported_image_media_type"
    URL_NOT_ALLOWED = "url_not_allowed"
    # OutputPathError
    OUTPUT_PATH_REFUSED = "output_path_refused"
    INVALID_OUTPUT_PATH = "invalid_output_path"
    EXTENSION_MISMATCH = "extension_mismatch"
    FILE_EXISTS = "file_exists"
    NAME_TOO_LONG = "name_too_long"
    OUTPUT_PATH_OUTSIDE_ROOT = "output_path_outside_root"
    # NotFoundError
    NOT_FOUND = "not_found"
    IMAGE_NOT_FOUND = "image_not_found"
    SESSION_NOT_FOUND = "session_not_found"
    JOB_NOT_FOUND = "job_not_found"
    # SpendLimitError
    SPEND_LIMIT = "spend_limit"
    # ConfigurationError, MissingCredentialsError
    CONFIGURATION_ERROR = "configuration_error"
    MISSING_CREDENTIALS = "missing_credentials"
    # UpstreamError
    UPSTREAM_ERROR = "upstream_error"
    UPSTREAM_REJECTED = "upstream_rejected"
    MODEL_NOT_FOUND = "model_not_found"
    MODEL_NOT_IN_PLAN = "model_not_in_plan"
    ENDPOINT_NOT_FOUND = "endpoint_not_found"
    UPSTREAM_NOT_FOUND = "upstream_not_found"
    REQUEST_TOO_LARGE = "request_too_large"
    UPSTREAM_INCOMPLETE_ANSWER = "upstream_incomplete_answer"
    NO_IMAGE_RETURNED = "no_image_returned"
    INTERRUPTED = "interrupted"
    CANCELLED = "cancelled"
    # RateLimitedError, QuotaExceededError, AuthenticationError, SafetyRefusalError,
    # UpstreamTimeoutError, UpstreamUnavailableError
    RATE_LIMITED = "rate_limited"
    QUOTA_EXCEEDED = "quota_exceeded"
    AUTHENTICATION_FAILED = "authentication_failed"
    SAFETY_REFUSAL = "safety_refusal"
    UPSTREAM_TIMEOUT = "upstream_timeout"
    UPSTREAM_UNAVAILABLE = "upstream_unavailable"
    # UpstreamProtocolError
    UPSTREAM_PROTOCOL_ERROR = "upstream_protocol_error"
    INVALID_IMAGE_DATA = "invalid_image_data"
    UPSTREAM_INVALID_IMAGE = "upstream_invalid_image"
    UPSTREAM_ANSWER_TOO_LARGE = "upstream_answer_too_large"
    # StorageError
    STORAGE_ERROR = "storage_error"
    WRITE_FAILED = "write_failed"
    # PluginError
    PLUGIN_FAILED = "plugin_failed"
    PROVIDER_INTERNAL_ERROR = "provider_internal_error"
    MISSING_IMAGE = "missing_image"
    # ItemFailure only: an image the vendor did not generate and gave no reason for
    NOT_GENERATED = "not_generated"
