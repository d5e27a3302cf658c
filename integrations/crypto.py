"""Credentials at rest: Fernet with key rotation.

FIELD_ENCRYPTION_KEY holds one or more comma-separated secrets. The first encrypts; all of them
decrypt, so a new key can be put in front and old ciphertexts re-encrypted at leisure
(`manage.py rotate_crm_credentials`). Any string works as a secret: it is stretched into a
Fernet key with SHA-256.
"""

import base64
import hashlib
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from django.conf import settings


class CredentialsUnreadable(Exception):
    """None of the configured keys opens this ciphertext (key removed too early?)."""


def _fernet_key(secret: str) -> bytes:
    try:
        raw = base64.urlsafe_b64decode(secret.encode())
        if len(raw) == 32:
            return secret.encode()  # already a Fernet key
    except (ValueError, TypeError):
        pass
    return base64.urlsafe_b64encode(hashlib.sha256(secret.encode()).digest())


def _multi() -> MultiFernet:
    keys = settings.FIELD_ENCRYPTION_KEYS
    return MultiFernet([Fernet(_fernet_key(k)) for k in keys])


def encrypt_json(data: dict) -> str:
    return _multi().encrypt(json.dumps(data, sort_keys=True).encode()).decode()


def decrypt_json(token: str) -> dict:
    if not token:
        return {}
    try:
        return json.loads(_multi().decrypt(token.encode()))
    except InvalidToken:
        raise CredentialsUnreadable("stored credentials cannot be decrypted") from None


def rotate(token: str) -> str:
    """Re-encrypt under the first (newest) key."""
    if not token:
        return token
    try:
        return _multi().rotate(token.encode()).decode()
    except InvalidToken:
        raise CredentialsUnreadable("stored credentials cannot be decrypted") from None
