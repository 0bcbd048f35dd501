"""The paraphrased query set for any training set, through any OpenAI-compatible chat endpoint.

- ``checks``: judging one answer (cleaned, flagged or rejected).
- ``endpoint``: the HTTP endpoint with retries, and the API key from the environment.
- ``job``: the resumable job that writes the query set (``paraphrase``).
"""

from gradlens.data.paraphrase.checks import ANSWERS, Check, check_paraphrase, flag_pair
from gradlens.data.paraphrase.endpoint import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    Endpoint,
    api_key_from_env,
    backoff,
    normalise_endpoint,
)
from gradlens.data.paraphrase.job import (
    ParaphraseSummary,
    messages_for,
    paraphrase,
    rejects_path,
)

__all__ = [
    "ANSWERS",
    "BACKOFF_BASE",
    "BACKOFF_CAP",
    "Check",
    "Endpoint",
    "ParaphraseSummary",
    "api_key_from_env",
    "backoff",
    "check_paraphrase",
    "flag_pair",
    "messages_for",
    "normalise_endpoint",
    "paraphrase",
    "rejects_path",
]
