"""Long-term dependencies in language: does the gradient reach the word that decides?"""

import os
import random
from pathlib import Path

import torch
from matplotlib.figure import Figure

import bptt
from bptt.tasks import AgreementTask

ROOT = Path(__file__).resolve().parents[3]  # the repository
FIGURES = ROOT / os.environ.get("BPTT_FIGURES", "docs/figures/guide")
QUICK = bool(os.environ.get("BPTT_GUIDE_QUICK"))
STEPS = 150 if QUICK else 600
GAPS = [4, 16] if QUICK else [4, 8, 16, 32]
CELLS = ["rnn-tanh", "lstm", "gru"]

# "I grew up in France . <gap filler words> I speak" -> French
# class c: the language of COUNTRIES[c]
COUNTRIES = ["France", "Spain", "Germany", "Italy"]
STORY = "and then we moved a lot but the summers were long so it was fun to read books there"
FILLER = STORY.split()
WORDS = [
    "<pad>",
    "I",
    "grew",
    "up",
    "in",
    ".",
    "speak",
    *COUNTRIES,
    *sorted(set(FILLER)),
]
ID = {word: index for index, word in enumerate(WORDS)}


def france(gap, batch, generator):
    """Token ids (B, gap + 8), the country at position 4; targets: the country's language."""
    rng = random.Random(int(torch.randint(2**31, (), generator=generator)))
    labels = [rng.randrange(len(COUNTRIES)) for _ in range(batch)]
    sentences = [
        [
            "I",
            "grew",
            "up",
            "in",
            COUNTRIES[c],
            ".",
            *rng.choices(FILLER, k=gap),
            "I",
            "speak",
        ]
        for c in labels
    ]
    return (
        torch.tensor([[ID[w] for w in s] for s in sentences]),
        torch.tensor(labels),
        4,
    )


def agreement(gap, batch, generator):
    """The agreement task: "the cat <clause of gap words>" -> was / were; the subject noun at position 1."""
    data = AgreementTask(gap, vary_length=False).sample(batch, generator)
    return data.inputs, data.targets, 1


TASKS = {
    "France → French": (france, len(WORDS), 4),
    "agreement": (agreement, len(AgreementTask.vocabulary), 2),
}
loss_fn = torch.nn.functional.cross_entropy
results = {}
print(
    f"{'task':<16}{'gap':>4}  {'model':<9}{'accuracy':>9}{'‖δ_key‖/‖δ_T‖':>15}{'horizon':>8}"
)
for task_name, (sample, vocabulary, classes) in TASKS.items():
    for gap in GAPS:
        test_x, test_y, key = sample(gap, 500, torch.Generator().manual_seed(1))
        for cell in CELLS:
            torch.manual_seed(0)
            recurrent = bptt.Recurrent.from_name(cell, 16, 32)
            model = bptt.SequenceModel(
                recurrent, bptt.LastStepHead(32, classes), vocab_size=vocabulary
            )
            optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
            data = torch.Generator().manual_seed(0)
            for _ in range(STEPS):
                x, y, _ = sample(gap, 32, data)
                loss = loss_fn(model(x), y)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
            with torch.no_grad():
                accuracy = float((model(test_x).argmax(-1) == test_y).float().mean())
            profile = bptt.gradient_profiles(model, test_x, test_y, loss_fn)[
                "recurrent.l0"
            ]
            reach = float(profile[key] / profile[-1])  # gradient at the deciding word
            horizon = bptt.effective_horizon(profile)
            results[task_name, cell, gap] = accuracy, reach
            print(
                f"{task_name:<16}{gap:>4}  {cell:<9}{accuracy:>9.3f}{reach:>15.3g}{horizon:>8}"
            )

figure = Figure(figsize=(11, 7.5))
axes = figure.subplots(2, 2)
for row, (task_name, (_, _, classes)) in zip(axes, TASKS.items(), strict=True):
    for cell, color in zip(CELLS, ["C0", "C1", "C2"], strict=True):
        accuracy, reach = zip(
            *(results[task_name, cell, gap] for gap in GAPS), strict=True
        )
        row[0].plot(GAPS, accuracy, "o-", color=color, label=cell)
        row[1].plot(GAPS, reach, "o-", color=color, label=cell)
    row[0].axhline(1 / classes, color="gray", ls="--", lw=0.8, label="chance")
    row[0].set(xscale="log", ylim=(0, 1.05), xlabel="gap (words between the key word and the prediction)",
               ylabel="test accuracy", title=f"{task_name}: accuracy after {STEPS} steps")  # fmt: skip
    row[1].set(xscale="log", yscale="log", xlabel="gap (words)", ylabel="‖δ_key‖ / ‖δ_T‖ (log)",
               title=f"{task_name}: gradient reaching the key word")  # fmt: skip
    for axis in row:
        axis.set_xticks(GAPS, labels=[str(g) for g in GAPS])
        axis.set_xticks([], minor=True)
        axis.legend(fontsize="small")
figure.tight_layout()
FIGURES.mkdir(parents=True, exist_ok=True)
figure.savefig(FIGURES / "language.png", dpi=100)
