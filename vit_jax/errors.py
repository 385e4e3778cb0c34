"""User errors: what a user can fix (a config value, a name, a path, the data),
told as one message without a traceback.

Library code raises `UserError` (a ValueError, so callers catching ValueError
keep working) with a message that names the problem and the fix. The command
lines wrap their entry point with `cli`, which prints such an error as one
line on stderr and exits with status 1; any other exception is a bug and
keeps its traceback.

    from vit_jax import errors

    @errors.cli
    def main(argv): ...

or, for an entry point that is not decorated, `errors.cli(main)(argv)`; under
absl, `app.run(errors.cli(main))`.
"""

import contextlib
import functools
import sys
from collections.abc import Callable

EXIT_USER_ERROR = 1


class UserError(ValueError):
    """A problem with the user's input (config, names, files, data), not a bug;
    the message says what to change."""


class NonFiniteError(UserError):
    """Training produced a non-finite loss or gradient norm (the run diverged)."""


class CheckpointError(UserError):
    """A checkpoint that cannot be read, does not fit the model, or holds what
    the target format cannot express (vit_jax.checkpoint, vit_jax.convert)."""


@contextlib.contextmanager
def reraised_as_user_error(*kinds: type[Exception]):
    """Re-raises the exceptions of `kinds` (default ValueError) raised inside as
    UserErrors with the same message: for calls into code that checks user
    input but raises plain ValueErrors. Keep the block to that one call, so
    that a bug's ValueError elsewhere keeps its traceback."""
    kinds = kinds or (ValueError,)
    try:
        yield
    except UserError:
        raise
    except kinds as error:
        raise UserError(str(error)) from None


def cli(main: Callable) -> Callable:
    """`main` with its UserErrors printed as one message and exit status 1."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            sys.stdout.flush()
            print(f"Error: {error}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER_ERROR) from None

    return wrapped
