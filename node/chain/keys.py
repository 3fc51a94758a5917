"""Loading a peer's key: a raw key from an environment variable, or an encrypted keystore.

Keys are never printed or logged; error messages name the source, never the value.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from eth_account import Account

from ..errors import KeyLoadError

__all__ = ["load_account", "account_from_env", "account_from_keystore", "write_keystore", "list_keystores", "DEFAULT_KEY_DIR"]

DEFAULT_KEY_DIR = Path("~/.fedchain/keys")


def account_from_env(var: str):
    raw = os.environ.get(var)
    if not raw:
        raise KeyLoadError(f"environment variable {var} is not set")
    try:
        return Account.from_key(raw.strip())
    except Exception:
        raise KeyLoadError(f"environment variable {var} does not hold a valid private key") from None


def account_from_keystore(path: str | os.PathLike, password: str):
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise KeyLoadError(f"keystore {p} does not exist") from None
    except (OSError, json.JSONDecodeError):
        raise KeyLoadError(f"keystore {p} is not a JSON keystore") from None
    try:
        return Account.from_key(Account.decrypt(data, password))
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise KeyLoadError(f"wrong password for keystore {p}") from None
        raise KeyLoadError(f"keystore {p} is malformed") from None
    except Exception:
        raise KeyLoadError(f"keystore {p} is malformed") from None


def load_account(*, key_env: str | None, keystore: str | None, password: str | None):
    if keystore:
        if password is None:
            raise KeyLoadError("a keystore needs a password (--password-env or --password-file)")
        return account_from_keystore(keystore, password)
    if key_env:
        return account_from_env(key_env)
    raise KeyLoadError("no key given: use --key-env VAR or --keystore FILE")


def write_keystore(account, path: str | os.PathLike, password: str, *, iterations: int | None = None) -> Path:
    """Encrypt ``account`` into a new keystore file readable by its owner only."""
    if not password:
        raise KeyLoadError("refusing to write a keystore with an empty password")
    kwargs = {"iterations": iterations} if iterations else {}
    data = Account.encrypt(account.key, password, **kwargs)
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyLoadError(f"keystore {p} already exists") from None
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh)
    return p


def list_keystores(directory: str | os.PathLike) -> list[tuple[str, str]]:
    """(name, address) of every keystore in ``directory``; reads only the public address field."""
    d = Path(directory).expanduser()
    out = []
    for p in sorted(d.glob("*.json")) if d.exists() else []:
        try:
            address = json.loads(p.read_text()).get("address", "")
        except (OSError, json.JSONDecodeError):
            continue
        out.append((p.stem, "0x" + address if address and not address.startswith("0x") else address))
    return out
