"""The confidence signals, declared once.

`SIGNALS`, of a generation: each computed from the full-vocabulary softmax of
the logits in float32 (float64 for float64 models), natural log. `xtl.generation`
and `xtl.sweeping` compute them, `xtl.results` stores them (one float column
each) and `xtl.selection` reads them. `OPTION_SIGNALS`, of a scoring-mode row:
`xtl.selection` derives them from the stored option log-probabilities. Needs no torch.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class SequenceSignals(NamedTuple):
    """Signals of the whole generated answer."""

    mean_logprob: Any  # mean log-probability of the generated tokens (EOS included when generated)
    min_logprob: Any  # their smallest log-probability


class FirstTokenSignals(NamedTuple):
    """Signals of the first generated token (a float, or one value per row)."""

    first_logprob: Any  # log-probability of the first generated token
    first_margin: Any  # top-1 minus top-2 logit at the first generated token
    first_entropy: Any  # entropy (nats) of the first token's distribution


SIGNALS: tuple[str, ...] = SequenceSignals._fields + FirstTokenSignals._fields

OPTION_SIGNALS: tuple[str, ...] = ("option_top_margin", "option_top_logprob", "option_entropy")
"""Gold-free confidence of a scoring-mode row, from its option log-probabilities
(`xtl.scoring`): the best option minus the second best (NaN with one option),
the best option's log-probability, and the entropy (nats) of the options'
probabilities renormalised over the options. Never the gold option."""

ALL_SIGNALS: tuple[str, ...] = SIGNALS + OPTION_SIGNALS
