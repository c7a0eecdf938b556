"""Command line for user accounts (the first admin, and any account without the app).

    python -m core.auth create-admin --username NAME              # password asked twice (getpass)
    printf '%s\\n' "$PASSWORD" | python -m core.auth create-admin --username NAME --password-stdin
    python -m core.auth add-user --username NAME [--role reviewer|admin] [--password-stdin] [--no-change-required]
    python -m core.auth reset-password --username NAME [--password-stdin]
    python -m core.auth disable-user --username NAME | enable-user --username NAME
    python -m core.auth set-role --username NAME --role admin
    python -m core.auth list-users
    python -m core.auth --url sqlite:////data/reviews.sqlite list-users

The database is ``--url`` or else ``core.settings.review_db_url()`` (CHEST_REVIEW_DB_URL /
CHEST_REVIEW_DB), the same one the app uses. Passwords are read from a prompt that does not echo, or
as the first line of stdin with ``--password-stdin``; never from an argument (it would show in the
process list and the shell history). An account added or reset by someone else must choose a new
password at its first sign-in (``--no-change-required`` turns that off for ``add-user``).
Exit status 0 on success, 1 with one line on stderr otherwise.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from collections.abc import Sequence

from core.auth.users import UserValidationError
from core.errors import ChestReviewError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core.auth", description="User accounts of the chest imaging review app")
    parser.add_argument("--url", help="SQLAlchemy URL of the review database (default: the app's)")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("create-admin", "create an administrator (the first one, or another)"),
                       ("add-user", "create an account"),
                       ("reset-password", "set a new password (the user must change it at sign-in)")):
        command = sub.add_parser(name, help=text)
        command.add_argument("--username", required=True)
        command.add_argument("--password-stdin", action="store_true", help="read the password from stdin's first line")
        if name == "add-user":
            command.add_argument("--role", choices=("reviewer", "admin"), default="reviewer")
            command.add_argument("--no-change-required", action="store_true",
                                 help="the user keeps this password (default: must choose a new one at sign-in)")
    for name, text in (("disable-user", "stop an account from signing in (its reviews stay)"),
                       ("enable-user", "let a disabled account sign in again")):
        sub.add_parser(name, help=text).add_argument("--username", required=True)
    role = sub.add_parser("set-role", help="make an account reviewer or admin")
    role.add_argument("--username", required=True)
    role.add_argument("--role", choices=("reviewer", "admin"), required=True)
    sub.add_parser("list-users", help="every account: username, role, state, last sign-in")
    return parser


def _read_password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\r\n")
    first = getpass.getpass("Password: ")
    if getpass.getpass("Password again: ") != first:
        raise UserValidationError("password", "The two passwords differ; nothing was changed.")
    return first


def _describe(user) -> str:
    state = "active" if user.active else "disabled"
    last = f"{user.last_login_at:%Y-%m-%d %H:%M} UTC" if user.last_login_at else "never"
    change = ", must change password" if user.must_change_password else ""
    return f"{user.username:<24} {user.role:<9} {state:<9} last sign-in {last}{change}"


def run(options: argparse.Namespace) -> str:
    """Carry out one command; the line to print."""
    from core.auth.users import UserStore

    if options.url:
        url = options.url
    else:
        from core.settings import review_db_url

        url = review_db_url()
    with UserStore(url) as store:
        name = getattr(options, "username", None)
        if options.command == "create-admin":
            user = store.create_user(name, _read_password(options.password_stdin), role="admin")
            return f"Created administrator {user.username!r}."
        if options.command == "add-user":
            user = store.create_user(name, _read_password(options.password_stdin), role=options.role,
                                     must_change_password=not options.no_change_required)
            return f"Created {user.role} {user.username!r}."
        if options.command == "reset-password":
            user = store.reset_password(name, _read_password(options.password_stdin))
            return f"New password set for {user.username!r}; they must choose their own at the next sign-in."
        if options.command == "disable-user":
            return f"Disabled {store.disable_user(name).username!r}."
        if options.command == "enable-user":
            return f"Enabled {store.enable_user(name).username!r}."
        if options.command == "set-role":
            user = store.set_role(name, options.role)
            return f"{user.username!r} is now {user.role}."
        users = store.users()
        return "\n".join(_describe(user) for user in users) if users else "No accounts yet."


def main(argv: Sequence[str] | None = None) -> int:
    options = _parser().parse_args(argv)
    try:
        print(run(options))
    except ChestReviewError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except (KeyboardInterrupt, EOFError):
        print("error: cancelled; nothing was changed.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
