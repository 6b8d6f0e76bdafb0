"""The project's exceptions, each with a one-paragraph ``explain()`` for people.

botocore's exceptions are translated once, by :func:`translate`; the original stays in
``__cause__``. No message ever carries a secret: they are built from error codes, endpoint
names and the service's own messages, never from request credentials.
"""

from __future__ import annotations

import re
from urllib.parse import quote

BODY_PREVIEW = 500


class SageMakerError(Exception):
    """Base of every sm_magic error. ``explain()`` is what a notebook shows."""

    retryable = False

    def __init__(self, message: str, *, endpoint: str | None = None, hint: str = ""):
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.hint = hint

    show_traceback = False  # `%sagemaker debug on` sets it on raised errors

    def explain(self) -> str:
        """What went wrong and what to do, in one paragraph."""
        return f"{self.message} {self.hint}".strip()

    def _render_traceback_(self) -> list[str]:
        """IPython shows this instead of a traceback: one paragraph (or all, when debugging)."""
        if self.show_traceback:
            from IPython import get_ipython

            shell = get_ipython()
            if shell is not None:
                return shell.InteractiveTB.structured_traceback(type(self), self, self.__traceback__)
        return [f"\x1b[0;31m{type(self).__name__}\x1b[0m: {self.explain()}"]


class ConfigError(SageMakerError):
    """Bad settings or arguments: unknown handler, bad JSON, missing template variables."""


class CredentialsError(SageMakerError):
    """No credentials, expired or rejected credentials, an unknown profile, no region."""


class EndpointNotFound(SageMakerError):
    """SageMaker answered ValidationError: the endpoint does not exist (in this account/region)."""


class ValidationFailed(SageMakerError):
    """SageMaker rejected the request (bad variant, inference component, body size...)."""


class ModelError(SageMakerError):
    """The container answered with an error (HTTP 424 from SageMaker)."""

    def __init__(self, message: str, *, endpoint: str | None = None, original_status: int | None = None,
                 original_message: str = "", log_stream_arn: str = "", hint: str = ""):
        super().__init__(message, endpoint=endpoint, hint=hint)
        self.original_status = original_status
        self.original_message = original_message
        self.log_stream_arn = log_stream_arn

    @property
    def cloudwatch_url(self) -> str | None:
        """The CloudWatch console page of the endpoint's log group."""
        match = re.match(r"arn:aws[\w-]*:logs:([\w-]+):\d+:log-group:([^:]+)", self.log_stream_arn or "")
        if not match:
            return None
        region, group = match.groups()
        encoded = quote(quote(group, safe=""), safe="").replace("%", "$")
        return (f"https://{region}.console.aws.amazon.com/cloudwatch/home?region={region}"
                f"#logsV2:log-groups/log-group/{encoded}")

    def explain(self) -> str:
        status = f" ({self.original_status})" if self.original_status else ""
        text = f"The model behind endpoint '{self.endpoint}' failed{status}: {self.original_message or self.message}"
        if self.cloudwatch_url:
            text += f" Its logs: {self.cloudwatch_url}"
        return f"{text} {self.hint}".strip()


class Throttled(SageMakerError):
    """ThrottlingException or ModelNotReadyException (HTTP 429), after botocore's retries."""

    retryable = True


class ServiceError(SageMakerError):
    """SageMaker's own failure: 500 InternalFailure, 503 ServiceUnavailable, 530 dependency."""

    retryable = True


class ReadTimeout(SageMakerError):
    """No answer within the client's read timeout."""

    retryable = True


class ConnectionFailed(SageMakerError):
    """The endpoint URL could not be reached, or the connection broke."""

    retryable = True


class StreamError(SageMakerError):
    """An answer broke off while arriving; ``partial`` holds the text that arrived before.

    ``streamed`` is False for a non-streamed call, whose body is only used whole: nothing is kept then,
    and the explanation says so (it always says what is true about what was kept).
    """

    def __init__(self, message: str, *, endpoint: str | None = None, partial: str = "", hint: str = "",
                 streamed: bool = True):
        super().__init__(message, endpoint=endpoint, hint=hint)
        self.partial = partial
        self.streamed = streamed

    def kept(self) -> str:
        """One sentence: what of the answer is kept."""
        if not self.streamed:
            return "Nothing of the answer is kept: a non-streamed answer is only read whole."
        if self.partial:
            count = len(self.partial)
            return f"The {count} character{'s' if count != 1 else ''} that arrived are kept as a partial answer."
        return "Nothing had arrived yet."

    def explain(self) -> str:
        return f"{self.message} {self.kept()} {self.hint or 'Run again to retry.'}".strip()


class EncodingError(ConfigError):
    """Text that cannot be sent: it holds a character UTF-8 cannot encode (a lone surrogate).

    ``where`` names the text (the prompt, a message, a parameter); :meth:`in_variable` names the
    notebook variable it came from, when the caller knows it.
    """

    def __init__(self, *, where: str, position: int, character: str, snippet: str, endpoint: str | None = None,
                 use: str = "sent", hint: str | None = None):
        self.where, self.position, self.character, self.snippet, self.use = where, position, character, snippet, use
        super().__init__(self._message(), endpoint=endpoint, hint=hint or (
            "Lone surrogates come from bytes decoded with errors='surrogateescape' (file names, subprocess "
            "output): decode the bytes as UTF-8 again, or clean the text with "
            "text.encode('utf-8', 'replace').decode('utf-8')."))

    def _message(self) -> str:
        return (f"The {self.where} cannot be {self.use}: the character at index {self.position} ({self.character!r}) "
                f"is a lone surrogate, which UTF-8 cannot encode; around it: {self.snippet}.")

    def in_variable(self, name: str) -> EncodingError:
        """This error naming the variable ``{name}`` the text came from."""
        self.where = f"variable {{{name}}}"
        self.message = self._message()
        self.args = (self.message,)
        return self


class RequestTooLarge(ConfigError):
    """The request body is above SageMaker's limit for a real-time call (6 MiB)."""

    def __init__(self, size: int, limit: int, *, endpoint: str | None = None):
        self.size, self.limit = size, limit
        super().__init__(
            f"The request body is {size / 2**20:.1f} MiB ({size:,} bytes); SageMaker refuses real-time requests "
            f"above {limit / 2**20:.0f} MiB ({limit:,} bytes), so nothing was sent.", endpoint=endpoint,
            hint="Split the text (--docs answers a question over long documents in chunks, --batch sends one "
                 "call per item), or use asynchronous inference (--async), which takes bodies up to 1 GB via S3.")


class PartialAnswer(SageMakerError):
    """An answer would be built from fewer chunks than planned (QA map calls failed)."""

    def __init__(self, message: str, *, endpoint: str | None = None, hint: str = "", result: object = None,
                 failures: list[str] | None = None):
        super().__init__(message, endpoint=endpoint, hint=hint)
        self.result = result  # the partial answer, for those who want it anyway
        self.failures = failures or []


class HandlerError(SageMakerError):
    """A content handler could not encode the request or decode the answer."""

    def __init__(self, message: str, *, handler: str = "", body: bytes | None = None,
                 endpoint: str | None = None, hint: str = ""):
        super().__init__(message, endpoint=endpoint, hint=hint)
        self.handler = handler
        self.body = body

    def explain(self) -> str:
        text = f"Content handler '{self.handler}' failed: {self.message}"
        if self.body is not None:
            preview = self.body[:BODY_PREVIEW].decode("utf-8", "replace")
            more = "…" if len(self.body) > BODY_PREVIEW else ""
            text += f" The body began: {preview!r}{more}"
        hint = self.hint or ("Check that the handler matches the container (see `%sagemaker handlers`, "
                             "or try --handler auto).")
        return f"{text} {hint}"


_CREDENTIAL_CODES = {
    "ExpiredTokenException", "ExpiredToken", "InvalidSignatureException", "UnrecognizedClientException",
    "InvalidClientTokenId", "MissingAuthenticationTokenException", "SignatureDoesNotMatch",
}


def translate(exc: BaseException, *, endpoint: str | None = None, region: str | None = None,
              partial: str = "", streamed: bool = False) -> SageMakerError:
    """Map a botocore/boto3 exception to the project's type (the original becomes the cause).

    ``streamed`` and ``partial`` say what of the answer arrived and is kept, so a broken connection's
    message never claims text was kept when the call was not streamed.
    """
    from botocore import exceptions as bx
    from botocore.eventstream import ParserError
    from urllib3.exceptions import ProtocolError

    if isinstance(exc, SageMakerError):
        return exc
    where = f" in region {region}" if region else ""
    if isinstance(exc, bx.EventStreamError):
        code = exc.response.get("Error", {}).get("Code", "StreamError")
        message = exc.response.get("Error", {}).get("Message", str(exc))
        return StreamError(
            f"The stream from endpoint '{endpoint}' broke off ({code}: {message}).",
            endpoint=endpoint, partial=partial, streamed=True,
        )
    if isinstance(exc, bx.ClientError):
        error = exc.response.get("Error", {})
        code, message = error.get("Code", ""), error.get("Message", str(exc))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "ModelError":
            return ModelError(
                message, endpoint=endpoint, original_status=exc.response.get("OriginalStatusCode"),
                original_message=exc.response.get("OriginalMessage", ""),
                log_stream_arn=exc.response.get("LogStreamArn", ""),
            )
        if code in ("ValidationError", "ValidationException") and re.search(
                r"Endpoint .* not found|Could not find endpoint", message):
            return EndpointNotFound(
                f"Endpoint '{endpoint}' was not found{where}: {message}", endpoint=endpoint,
                hint="Check the name and the region; `%sagemaker endpoints` lists the endpoints this session can see.",
            )
        if code in ("ValidationError", "ValidationException"):
            return ValidationFailed(f"SageMaker rejected the request: {message}", endpoint=endpoint)
        if code in ("ThrottlingException", "ModelNotReadyException", "TooManyRequestsException"):
            what = "is still loading the model" if code == "ModelNotReadyException" else "is throttling requests"
            return Throttled(
                f"Endpoint '{endpoint}' {what} ({code}: {message}).", endpoint=endpoint,
                hint="botocore retries this up to max_attempts times in all; wait a little and run again, "
                     "lower --concurrency, or raise max_attempts with `%sagemaker config`.",
            )
        if code in ("AccessDeniedException", "AccessDenied"):
            return CredentialsError(
                f"AWS denied the call ({code}: {message}).", endpoint=endpoint,
                hint="The credentials work but lack a permission: check the IAM policy of the user or role "
                     "(sagemaker:InvokeEndpoint for calls, sagemaker:ListEndpoints/Describe* for listing).",
            )
        if code in _CREDENTIAL_CODES:
            return CredentialsError(
                f"AWS rejected the credentials ({code}: {message}).",
                hint="Refresh them (e.g. `aws sso login`) or set the session again with `%sagemaker session`.",
            )
        if status and status >= 500:
            return ServiceError(
                f"SageMaker failed with {status} {code}: {message}", endpoint=endpoint,
                hint="This is on the service side and usually passes; run again in a moment.",
            )
        return SageMakerError(f"{code or 'Error'}: {message}", endpoint=endpoint)
    if isinstance(exc, bx.ReadTimeoutError):
        return ReadTimeout(
            f"Endpoint '{endpoint}' did not answer within the read timeout.", endpoint=endpoint,
            hint="The model may be slow: raise the timeout with `%sagemaker config read_timeout=120`, "
                 "or ask for fewer tokens.",
        )
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError | bx.CredentialRetrievalError):
        return CredentialsError(
            f"No usable AWS credentials were found ({exc}).",
            hint="Set them with `%sagemaker session --profile NAME` (or --role-arn), "
                 "or run against a local endpoint with `%sagemaker session --local URL`.",
        )
    if isinstance(exc, bx.ProfileNotFound):
        return CredentialsError(f"{exc}.", hint="`aws configure list-profiles` shows the profiles you have.")
    if isinstance(exc, bx.NoRegionError):
        return CredentialsError(
            "No AWS region is set.", hint="Set one with `%sagemaker session --region us-east-1`.")
    if isinstance(exc, bx.ConnectionClosedError):
        return ConnectionFailed(
            f"Endpoint '{endpoint}' closed the connection before answering.", endpoint=endpoint,
            hint="botocore retries this up to max_attempts times in all; if it keeps happening, check the "
                 "endpoint's health and logs.",
        )
    if isinstance(exc, bx.ResponseStreamingError | ParserError | ProtocolError):
        return StreamError(
            f"The connection to endpoint '{endpoint}' broke while the answer was arriving ({type(exc).__name__}).",
            endpoint=endpoint, partial=partial, streamed=streamed,
        )
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.HTTPClientError):
        return ConnectionFailed(
            f"Could not reach the SageMaker runtime ({exc}).", endpoint=endpoint,
            hint="Check the endpoint URL and network, or `%sagemaker session` to see where calls go.",
        )
    if isinstance(exc, bx.ParamValidationError):
        return ConfigError(f"Invalid request parameters: {exc}", endpoint=endpoint)
    return SageMakerError(f"{type(exc).__name__}: {exc}", endpoint=endpoint)
