"""Text generation from a trained language model (``bptt sample``)."""

from __future__ import annotations

import math

import torch

from bptt.data import PAD_ID, UNK_ID, AbstractTokenizer
from bptt.models import SequenceModel


@torch.no_grad()
def generate(
    model: SequenceModel,
    tokenizer: AbstractTokenizer,
    prompt: str,
    length: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> str:
    """Continue ``prompt`` by ``length`` tokens, sampling one token at a time.

    The prompt is read in one pass; then each sampled token is fed back with the carried
    state. Padding and ``<unk>`` are never sampled.

    Args:
        model: a many-to-many model over ``tokenizer``'s ids (e.g. a ``charlm`` run's).
        tokenizer: the tokeniser the model was trained with.
        prompt: the text to continue; at least one token. Tokens outside the vocabulary
            are read as ``<unk>``.
        length: how many tokens to generate.
        temperature: divides the logits: below 1 more conservative, above 1 more varied;
            0 always takes the most likely token.
        generator: the source of randomness (seed it for a reproducible sample).

    Returns:
        The generated text, without the prompt.
    """
    if not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be a non-negative integer, got {length!r}")
    if not math.isfinite(temperature) or temperature < 0:
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    ids = tokenizer.encode(prompt)
    if not ids:
        raise ValueError("the prompt is empty; give at least one character or word to start from")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    banned = torch.tensor([PAD_ID, UNK_ID], device=device)
    logits, state = model.forward_with_state(torch.tensor([ids], device=device))
    generated: list[int] = []
    for _ in range(length):
        scores = logits[0, -1].double()
        scores[banned] = -math.inf
        if temperature == 0:
            token = int(scores.argmax())
        else:
            probabilities = torch.softmax(scores / temperature, dim=-1).cpu()
            token = int(torch.multinomial(probabilities, 1, generator=generator))
        generated.append(token)
        logits, state = model.forward_with_state(torch.tensor([[token]], device=device), state)
    model.train(was_training)
    return tokenizer.decode(generated)
