"""SecretsDetector: provider keys, tokens, private keys, high-entropy assignments.

Every token here is fake and assembled at run time from pieces, so that no secret
scanner mistakes this file for a leak.
"""

from __future__ import annotations

import base64
import json
import random
import string
from typing import Any

import pytest

from detectors.secrets import SecretsDetector, shannon_entropy

_rng = random.Random(1234)
ALNUM = string.ascii_letters + string.digits


def rand(n: int, alphabet: str = ALNUM) -> str:
    # Fixed-seed random: mixed classes, like real keys.
    while True:
        value = "".join(_rng.choice(alphabet) for _ in range(n))
        if n < 8 or (
            any(c.isupper() for c in value)
            and any(c.islower() for c in value)
            and any(c.isdigit() for c in value)
        ):
            return value


def b64url(obj: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()


AWS_ID = "AK" + "IA" + "IOSFODNN7" + "EXAMPLE"
AWS_STS_ID = "AS" + "IA" + "Y34FZKBOKMUTVV7A"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/" + "bPxRfiCYEXAMPLEKEY"
GITHUB_CLASSIC = "gh" + "p_" + rand(36)
GITHUB_OAUTH = "gh" + "o_" + rand(36)
GITHUB_PAT = "github" + "_pat_" + rand(22) + "_" + rand(59)
OPENAI_LEGACY = "sk" + "-" + rand(48)
OPENAI_PROJECT = "sk" + "-proj-" + rand(60, ALNUM + "_-") + "T3BlbkFJ" + rand(40)
ANTHROPIC = "sk" + "-ant-api03-" + rand(93, ALNUM + "_-") + "AA"
SLACK = "xo" + "xb-" + "123456789012-1234567890123-" + rand(24)
GOOGLE = "AI" + "za" + "Sy" + rand(33, ALNUM + "_-")
STRIPE = "sk" + "_live_" + rand(24)
STRIPE_RESTRICTED = "rk" + "_live_" + rand(30)
JWT = ".".join(
    [
        b64url({"alg": "HS256", "typ": "JWT"}),
        b64url({"sub": "1234567890", "name": "Ann", "iat": 1516239022}),
        rand(43, ALNUM + "_-"),
    ]
)
JWT_NO_ALG = ".".join([b64url({"typ": "JWT", "kid": "k1"}), b64url({"sub": "1"}), rand(43)])
PEM_BODY = "\n".join(rand(64, ALNUM + "+/") for _ in range(4)) + "\n" + rand(20) + "=="
RSA_KEY = f"-----BEGIN RSA PRIVATE KEY-----\n{PEM_BODY}\n-----END RSA PRIVATE KEY-----"
OPENSSH_KEY = f"-----BEGIN OPENSSH PRIVATE KEY-----\n{PEM_BODY}\n-----END OPENSSH PRIVATE KEY-----"
PGP_KEY = (
    f"-----BEGIN PGP PRIVATE KEY BLOCK-----\n\n{PEM_BODY}\n-----END PGP PRIVATE KEY BLOCK-----"
)
TRUNCATED_KEY = f"-----BEGIN PRIVATE KEY-----\n{PEM_BODY}"
PASSWORD = "Tr0ub4dor&3x!"
HEX_KEY = "a8f5f167f44f4964e6c998dee827110c"


def scan(text: str, **options: Any) -> list[tuple[str, str]]:
    """(label, matched text) per finding; the matched text is for the test only."""
    detector = SecretsDetector(SecretsDetector.Options(**options))
    (findings,) = detector.detect_sync([text])
    for finding in findings:
        assert finding.detector == "secrets"
        assert 0 < finding.score <= 1
        assert text[finding.start : finding.end] not in str(dict(finding.metadata))
    return [(f.label, text[f.start : f.end]) for f in findings]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"key id {AWS_ID} in config", [("AWS_ACCESS_KEY", AWS_ID)]),
        (f"temp creds {AWS_STS_ID}.", [("AWS_ACCESS_KEY", AWS_STS_ID)]),
        (f"aws_secret_access_key = {AWS_SECRET}", [("AWS_SECRET_KEY", AWS_SECRET)]),
        (f"AWS Secret Access Key: {AWS_SECRET}\n", [("AWS_SECRET_KEY", AWS_SECRET)]),
        (f'"AWS_SECRET_ACCESS_KEY": "{AWS_SECRET}"', [("AWS_SECRET_KEY", AWS_SECRET)]),
        (f"token {GITHUB_CLASSIC} ok", [("GITHUB_TOKEN", GITHUB_CLASSIC)]),
        (f"({GITHUB_OAUTH})", [("GITHUB_TOKEN", GITHUB_OAUTH)]),
        (f"use {GITHUB_PAT}", [("GITHUB_TOKEN", GITHUB_PAT)]),
        (f"OPENAI_KEY {OPENAI_LEGACY}", [("OPENAI_API_KEY", OPENAI_LEGACY)]),
        (f"client = OpenAI('{OPENAI_PROJECT}')", [("OPENAI_API_KEY", OPENAI_PROJECT)]),
        (f"x-api-key: {ANTHROPIC}", [("ANTHROPIC_API_KEY", ANTHROPIC)]),
        (f"slack {SLACK} here", [("SLACK_TOKEN", SLACK)]),
        (f"maps key={GOOGLE}&q=1", [("GOOGLE_API_KEY", GOOGLE)]),
        (
            f"stripe {STRIPE} and {STRIPE_RESTRICTED}",
            [("STRIPE_SECRET_KEY", STRIPE), ("STRIPE_SECRET_KEY", STRIPE_RESTRICTED)],
        ),
        (f"Authorization: Bearer {JWT}", [("JWT", JWT)]),
        (f"key:\n{RSA_KEY}\nthanks", [("PRIVATE_KEY", RSA_KEY)]),
        (OPENSSH_KEY, [("PRIVATE_KEY", OPENSSH_KEY)]),
        (PGP_KEY, [("PRIVATE_KEY", PGP_KEY)]),
        (TRUNCATED_KEY, [("PRIVATE_KEY", TRUNCATED_KEY)]),
        # generic assignments: the value is the span
        (f'password = "{PASSWORD}"', [("GENERIC_SECRET", PASSWORD)]),
        ("DB_PASSWORD=S3cr3tP4ssw0rd99\n", [("GENERIC_SECRET", "S3cr3tP4ssw0rd99")]),
        (f'{{"api_key": "{HEX_KEY}"}}', [("GENERIC_SECRET", HEX_KEY)]),
        (
            "client_secret: 9f8e7d6c5b4a39281706f5e4",
            [("GENERIC_SECRET", "9f8e7d6c5b4a39281706f5e4")],
        ),
        ("auth_token := 'Zx81kLm02QpR77'", [("GENERIC_SECRET", "Zx81kLm02QpR77")]),
        (
            "conn = postgres://admin:Xk29fLq7w@db:5432/app secret=postgres://admin:Xk29fLq7w@db/app",
            [("GENERIC_SECRET", "postgres://admin:Xk29fLq7w@db/app")],
        ),
        # a specific label hides the generic one on the same span
        (f'api_key = "{OPENAI_PROJECT}"', [("OPENAI_API_KEY", OPENAI_PROJECT)]),
        (f"token: {JWT}", [("JWT", JWT)]),
        (f"GITHUB_TOKEN={GITHUB_CLASSIC}", [("GITHUB_TOKEN", GITHUB_CLASSIC)]),
        # several, in order of position
        (f"{GOOGLE} then {AWS_ID}", [("GOOGLE_API_KEY", GOOGLE), ("AWS_ACCESS_KEY", AWS_ID)]),
    ],
)
def test_positives(text: str, expected: list) -> None:
    assert scan(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "An ordinary sentence about keys, tokens and passwords.",
        # AWS look-alikes: too short, lower case, digits outside base32, glued to a word
        "AKIA" + "IOSFODNN7EXAMPL",
        "akia" + "iosfodnn7example",
        "AKIA" + "IOSFODNN1EXAMP8E",
        "XAKIA" + "IOSFODNN7EXAMPLE",
        f"a 40 character string alone: {AWS_SECRET}",
        # GitHub look-alikes
        "gh" + "p_" + rand(20),
        "gh" + "x_" + rand(36),
        # OpenAI look-alikes: prose with dashes, too short
        "sk" + "-learn-is-a-python-library-for-machine-learning",
        "sk" + "-" + rand(12),
        # Slack: xoxo is not a token prefix; no digits
        "xo" + "xo-hugs-and-kisses-from-me",
        "xo" + "xb-abcdefghijklmnop",
        "AI" + "za" + rand(20),
        # Stripe test keys are not secrets
        "sk" + "_test_" + rand(24),
        # JWT look-alikes: one part; header without alg; header not JSON
        b64url({"alg": "HS256"}),
        JWT_NO_ALG,
        "eyJ" + "ub3QganNvbiBhdCBhbGw." + rand(20) + "." + rand(20),
        # public keys and certificates are not private
        "-----BEGIN PUBLIC KEY-----\n" + PEM_BODY + "\n-----END PUBLIC KEY-----",
        "-----BEGIN CERTIFICATE-----\n" + PEM_BODY + "\n-----END CERTIFICATE-----",
        # generic look-alikes
        'password = "password"',
        'password = "aaaaaaaaaaaa"',
        "password: <your-password-here>",
        'password = "changeme123"',
        "api_key = YOUR_API_KEY_EXAMPLE",
        'api_key = os.environ["API_KEY"]',
        "token = get_token(user)",
        "token = self.token",
        "secret: ${SECRET_FROM_VAULT}",
        "PWD=/home/alice/projects/x1",
        "token_url: https://login.acme.io/oauth2/token",
        "my password is hunter2 and nobody knows",
        "secretary: Jonathan Smithers",
        "password: null",
        "token: authorizations",  # one character class, though above the entropy threshold
    ],
)
def test_negatives_and_look_alikes(text: str) -> None:
    assert scan(text) == []


def test_generic_kinds() -> None:
    detector = SecretsDetector()
    text = "\n".join(
        [
            f"passwd={PASSWORD}",
            f"client_secret={HEX_KEY}",
            f"refresh_token={HEX_KEY[::-1]}",
            "apikey=Q2x8vN4mK7pR1sT6",
            "credentials: Zm9vYmFyOmJhejEyMw9",
        ]
    )
    (found,) = detector.detect_sync([text])
    assert [(f.label, f.metadata["kind"]) for f in found] == [
        ("GENERIC_SECRET", "password"),
        ("GENERIC_SECRET", "secret"),
        ("GENERIC_SECRET", "token"),
        ("GENERIC_SECRET", "api_key"),
        ("GENERIC_SECRET", "credential"),
    ]


@pytest.mark.parametrize(
    ("options", "expected_labels"),
    [
        ({}, ["GITHUB_TOKEN", "GENERIC_SECRET"]),
        ({"disabled_labels": ["GENERIC_SECRET"]}, ["GITHUB_TOKEN"]),
        ({"disabled_labels": ["GITHUB_TOKEN"]}, ["GENERIC_SECRET"]),
        ({"entropy_threshold": 4.5}, ["GITHUB_TOKEN"]),  # the password is ~3.7 bits/char
        ({"min_length": 20}, ["GITHUB_TOKEN"]),
    ],
)
def test_options(options: dict, expected_labels: list[str]) -> None:
    text = f"{GITHUB_CLASSIC} password={PASSWORD}"
    assert [label for label, _ in scan(text, **options)] == expected_labels


def test_text_whose_lower_case_is_longer_still_finds_specific_keys() -> None:
    # U+0130 lower-cases to two characters: the lower-cased context rules are skipped,
    # the exact-case ones still run with correct offsets.
    assert scan(f"İstanbul {GITHUB_CLASSIC}") == [("GITHUB_TOKEN", GITHUB_CLASSIC)]


def test_max_findings() -> None:
    assert len(scan(" ".join([AWS_ID] * 50), max_findings=5)) == 5


def test_metadata_and_state() -> None:
    detector = SecretsDetector(SecretsDetector.Options(disabled_labels=["JWT"]), name="creds")
    (found,) = detector.detect_sync([f"{AWS_ID} password={PASSWORD}"])
    assert [(f.detector, dict(f.metadata)) for f in found] == [
        ("creds", {}),
        ("creds", {"kind": "password"}),
    ]
    labels = detector.state()["labels"]
    assert "JWT" not in labels and "AWS_ACCESS_KEY" in labels and "GENERIC_SECRET" in labels


async def test_async_detect_batch() -> None:
    detector = SecretsDetector()
    await detector.start()
    results = await detector.detect(["nothing here", f"id {AWS_ID}", ""])
    assert [[f.label for f in found] for found in results] == [[], ["AWS_ACCESS_KEY"], []]
    await detector.close()


@pytest.mark.parametrize(
    ("value", "bits"),
    [("", 0.0), ("aaaa", 0.0), ("ab", 1.0), ("abcd", 2.0), ("aabb", 1.0)],
)
def test_shannon_entropy(value: str, bits: float) -> None:
    assert shannon_entropy(value) == pytest.approx(bits)
