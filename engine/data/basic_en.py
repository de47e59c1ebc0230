"""The ``en-basic`` built-in texts: short English sentences over a small, closed vocabulary.

    python -m engine.data.basic_en            # rewrites engine/data/sentences_en-basic.txt

A tiny student trained on a few thousand utterances cannot learn English spelling-to-sound from
300 sentences with an open vocabulary: it memorises them. These 12,000 sentences reuse about 250
common words in a handful of plain grammatical frames, so every word is heard in hundreds of
contexts and a held-out sentence is a new combination of known words. The file is generated deterministically
(seeded) and checked against this generator by the tests.
"""
from __future__ import annotations

import random
from pathlib import Path

OUT = Path(__file__).parent / "sentences_en-basic.txt"
COUNT = 12000
SEED = 2025

NAMES = "Anna Ben Clara David Emma Frank Grace Henry Lucy Mark Nina Oscar Paul Rose Sam Tom".split()
PEOPLE = ("teacher", "doctor", "farmer", "driver", "baker", "painter", "neighbor", "student",
          "little boy", "young girl", "old man", "old woman")
RELATIVES = "mother father sister brother uncle aunt cousin grandmother grandfather friend".split()
ANIMALS = "dog cat horse bird rabbit duck cow sheep fox mouse".split()
ADJECTIVES = ("big small old new red blue green yellow brown white black warm cold quiet heavy "
              "clean bright soft tall long").split()
THINGS = ("book ball box bag cup chair table door window coat hat letter key lamp basket bottle "
          "map picture clock bike boat kite blanket bucket").split()
FOODS = "bread apples soup cheese rice eggs cake tea milk fish beans oranges".split()
PLACES = ("in the garden", "on the table", "near the river", "at the station", "in the kitchen",
          "by the window", "under the bridge", "at the market", "in the park", "on the hill",
          "behind the house", "at the school", "in the village", "on the boat", "near the door")
DESTINATIONS = "market school station river park library beach farm village church office shop".split()
TIMES = ("this morning", "last night", "yesterday", "on Monday", "after lunch", "before dinner",
         "last week", "in the evening", "at noon", "on Sunday", "last summer", "early today")
FUTURE = ("tomorrow", "next week", "after school", "on Friday", "tonight", "in the morning",
          "next summer", "later today")
HABITS = ("every morning", "every evening", "on weekends", "after work", "twice a week", "every day",
          "in the winter", "before breakfast")
# (base, past, third person) for verbs that take an object.
VERBS = [("find", "found", "finds"), ("carry", "carried", "carries"), ("paint", "painted", "paints"),
         ("clean", "cleaned", "cleans"), ("buy", "bought", "buys"), ("sell", "sold", "sells"),
         ("open", "opened", "opens"), ("close", "closed", "closes"), ("lose", "lost", "loses"),
         ("bring", "brought", "brings"), ("fix", "fixed", "fixes"), ("move", "moved", "moves"),
         ("hold", "held", "holds"), ("draw", "drew", "draws"), ("wash", "washed", "washes"),
         ("keep", "kept", "keeps"), ("watch", "watched", "watches"), ("take", "took", "takes")]
FOOD_VERBS = [("eat", "ate", "eats"), ("cook", "cooked", "cooks"), ("share", "shared", "shares"),
              ("make", "made", "makes"), ("buy", "bought", "buys"), ("want", "wanted", "wants")]
MOTION = [("walk", "walked"), ("run", "ran"), ("drive", "drove"), ("ride", "rode"), ("go", "went"),
          ("hurry", "hurried")]
FEELINGS = "happy tired hungry busy sleepy glad angry calm worried excited".split()


def _a(word: str) -> str:
    return ("an " if word[0] in "aeiou" else "a ") + word


def _subject(r: random.Random) -> str:
    pick = r.random()
    if pick < 0.35:
        return r.choice(NAMES)
    if pick < 0.65:
        return "the " + r.choice(PEOPLE)
    if pick < 0.85:
        return "my " + r.choice(RELATIVES)
    return "the " + r.choice(ADJECTIVES[:5]) + " " + r.choice(ANIMALS)


def _thing(r: random.Random) -> str:
    return "the " + (r.choice(ADJECTIVES) + " " if r.random() < 0.6 else "") + r.choice(THINGS)


FRAMES = (
    lambda r: f"{_subject(r)} {r.choice(VERBS)[1]} {_thing(r)} {r.choice(PLACES)}.",
    lambda r: f"{_subject(r)} {r.choice(VERBS)[1]} {_thing(r)} {r.choice(TIMES)}.",
    lambda r: f"{_subject(r)} {r.choice(FOOD_VERBS)[2]} {r.choice(FOODS)} {r.choice(HABITS)}.",
    lambda r: f"{_subject(r)} {r.choice(MOTION)[1]} to the {r.choice(DESTINATIONS)} {r.choice(TIMES)}.",
    lambda r: f"Can you {r.choice(VERBS)[0]} {_thing(r)} {r.choice(FUTURE)}?",
    lambda r: f"We will {r.choice(MOTION)[0]} to the {r.choice(DESTINATIONS)} {r.choice(FUTURE)}.",
    lambda r: f"There is {_a(r.choice(ADJECTIVES))} {r.choice(THINGS)} {r.choice(PLACES)}.",
    lambda r: f"{_subject(r)} was very {r.choice(FEELINGS)} {r.choice(TIMES)}.",
    lambda r: f"Please {r.choice(VERBS)[0]} {_thing(r)} {r.choice(PLACES)}.",
    lambda r: f"{r.choice(NAMES)} and {r.choice(NAMES)} {r.choice(FOOD_VERBS)[1]} {r.choice(FOODS)} {r.choice(TIMES)}.",
)


def sentences(count: int = COUNT, seed: int = SEED) -> list[str]:
    """``count`` distinct sentences, in a fixed order for a given seed."""
    r = random.Random(seed)
    out: dict[str, None] = {}
    while len(out) < count:
        text = r.choice(FRAMES)(r)
        out.setdefault(text[0].upper() + text[1:], None)
    return list(out)


def vocabulary(texts: list[str]) -> set[str]:
    return {w.strip(".?").lower() for t in texts for w in t.split()}


if __name__ == "__main__":
    texts = sentences()
    OUT.write_text("\n".join(texts) + "\n", encoding="utf-8")
    print(f"{OUT}: {len(texts)} sentences, {len(vocabulary(texts))} distinct words")
