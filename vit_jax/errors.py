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
EXIT_USAGE = 2  # A command line that cannot be run as given, as absl and argparse exit.
EXIT_INTERRUPTED = 130  # 128 + SIGINT: what shells report for Ctrl-C.


class UserError(ValueError):
    """A problem with the user's input (config, names, files, data), not a bug;
    the message says what to change."""


class UsageError(UserError):
    """A command line that cannot be run as given (a flag's value, a missing
    argument); exits with status 2."""


class Interrupted(KeyboardInterrupt):
    """Ctrl-C, handled: the message says what was kept and how to go on."""


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
    """`main` with its UserErrors printed as one message and exit status 1
    (2 for a UsageError), and Ctrl-C as one line and status 130."""

    @functools.wraps(main)
    def wrapped(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserError as error:
            sys.stdout.flush()
            print(f"Error: {error}", file=sys.stderr, flush=True)
            code = EXIT_USAGE if isinstance(error, UsageError) else EXIT_USER_ERROR
            raise SystemExit(code) from None
        except KeyboardInterrupt as error:
            sys.stdout.flush()
            print(f"Interrupted. {error}".strip(), file=sys.stderr, flush=True)
            raise SystemExit(EXIT_INTERRUPTED) from None

    return wrapped


def run_absl_app(main: Callable) -> None:
    """absl's app.run(cli(main)), except that --help (and --helpfull) exit
    with status 0 where absl exits 1: asking for help is not an error."""
    from absl import app  # Only the absl command lines need it.

    asked_for_help = any(
        arg.split("=")[0] in ("--help", "-?", "--helpshort", "--helpfull") for arg in sys.argv[1:]
    )

    def parse_flags(argv):
        try:
            return app.parse_flags_with_usage(argv)
        except OSError as error:  # A flag's file (e.g. --config's) that does not load.
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            print(
                f"Error: a flag names a file that does not load ({lines[-1] if lines else error}): "
                "check the path.",
                file=sys.stderr,
                flush=True,
            )
            raise SystemExit(EXIT_USAGE) from None

    try:
        app.run(cli(main), flags_parser=parse_flags)
    except SystemExit as exit_:
        if asked_for_help and exit_.code == 1:
            raise SystemExit(0) from None
        raise
