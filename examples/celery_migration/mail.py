"""A stand-in for the mail service both versions call, deterministic so a test can check
that the right failures are retried: an address starting "flaky" meets a timeout on its
first attempt (worth a retry); a string without "@" is refused (retrying cannot help)."""


class MailServerDown(ConnectionError):
    """The mail server did not answer; a later attempt may get through."""


def deliver(to: str, subject: str, attempt: int) -> str:
    if "@" not in to:
        raise ValueError(f"not an email address: {to!r}")
    if to.startswith("flaky") and attempt == 1:
        raise MailServerDown("the mail server timed out")
    return f"{subject!r} sent to {to} on attempt {attempt}"
