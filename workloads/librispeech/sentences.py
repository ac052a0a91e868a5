"""English sentences for the mini speech dataset: a template grammar over a real word list.

Nouns (925 everyday object names) come from two class lists shipped inside the installed
``tensorflow_datasets`` wheel: QuickDraw's 345 drawing categories and LVIS's 1,203 object
classes, keeping the single lowercase words of 3-12 letters. The other word classes
(adjectives, verbs with their past tenses, prepositions, names, times, adverbs) are
written below. Together they give a vocabulary of well over 1,000 words.
"""

import functools
import re
from pathlib import Path

import numpy as np
import tensorflow_datasets

_TFDS = Path(tensorflow_datasets.__file__).parent
NOUN_SOURCES = (
    _TFDS / "datasets" / "quickdraw_bitmap" / "labels.txt",
    _TFDS / "datasets" / "lvis" / "classes.txt",
)

ADJECTIVES = """red blue green yellow black white brown pink purple gray golden silver big
small tiny huge long short tall old new young heavy light warm cold hot wet dry soft hard
clean dirty empty full bright dark quiet loud cheap broken shiny round square strange lovely
ugly fancy simple famous lucky funny sleepy happy angry hungry busy lazy gentle brave clever
wooden plastic wild fresh sweet sour bitter smooth rough narrow wide sharp dull perfect
favorite expensive useful dusty rusty striped spotted tidy messy""".split()

# (present, past) pairs: regular and irregular.
VERBS = [
    tuple(pair.split("/"))
    for pair in """see/saw find/found take/took bring/brought buy/bought sell/sold hold/held
    drop/dropped carry/carried move/moved paint/painted wash/washed clean/cleaned fix/fixed
    open/opened close/closed hide/hid lose/lost keep/kept need/needed want/wanted like/liked
    watch/watched draw/drew throw/threw catch/caught push/pushed pull/pulled lift/lifted
    fill/filled check/checked borrow/borrowed order/ordered count/counted touch/touched
    cover/covered pack/packed send/sent leave/left choose/chose remember/remembered
    forget/forgot notice/noticed describe/described measure/measured weigh/weighed
    repair/repaired polish/polished wrap/wrapped grab/grabbed share/shared return/returned
    steal/stole break/broke build/built sketch/sketched""".split()
]

PREPOSITIONS = [
    p.replace("_", " ")
    for p in """on under near behind beside inside above below next_to in_front_of beneath
    against by across_from close_to""".split()
]

NAMES = """anna ben carla david emma frank grace henry ivy jack kate liam maria noah olivia
peter rosa sam tom zoe alice bob clara daniel ella felix george hannah isaac julia kevin
laura mike nina oscar paul ruth sarah tina walter lucy mark james sophie victor""".split()

TIMES = [
    t.replace("_", " ")
    for t in """today yesterday tomorrow tonight later this_morning last_week every_day
    on_monday on_tuesday on_wednesday on_thursday on_friday on_saturday on_sunday
    after_lunch before_dinner""".split()
]

ADVERBS = """quickly slowly carefully quietly finally suddenly gently always never often
almost nearly""".split()

DETERMINERS = "the the the a my your his her our their this that".split()
PRONOUNS = "i you we they she he".split()

# Slots in braces; each is filled independently at random.
TEMPLATES = [
    "{det} {adj} {noun} is {prep} {det} {noun}",
    "{name} {past} {det} {adj} {noun} {time}",
    "please {verb} {det} {noun} {prep} {det} {noun}",
    "where did {name} {verb} {det} {noun}",
    "{pron} {adv} {past} {det} {noun} and {det} {noun}",
    "{time} {name} will {verb} {det} {adj} {noun}",
    "{det} {noun} {prep} {det} {noun} was very {adj}",
    "can you {verb} {det} {noun} for {name}",
    "{name} and {name} {past} {det} {noun}",
    "i think {det} {noun} is too {adj}",
]


@functools.cache
def nouns() -> tuple[str, ...]:
    """Sorted single-word nouns from the shipped class lists (names like ``alarm_clock``
    or ``bow_(weapon)`` are skipped)."""
    found = set()
    for path in NOUN_SOURCES:
        for line in path.read_text().splitlines():
            word = line.strip()
            if re.fullmatch(r"[a-z]{3,12}", word):
                found.add(word)
    return tuple(sorted(found))


def vocabulary() -> set[str]:
    """Every word the grammar can produce (lowercase)."""
    words = set(nouns()) | set(ADJECTIVES) | set(NAMES) | set(ADVERBS) | set(PRONOUNS)
    words |= {w for pair in VERBS for w in pair}
    words |= {w for phrase in PREPOSITIONS + TIMES for w in phrase.split()}
    words |= set(DETERMINERS) | {"an"}
    words |= {w for t in TEMPLATES for w in re.sub(r"\{\w+\}", " ", t).split()}
    return words


def sentence(rng: np.random.Generator) -> str:
    """One random lowercase sentence (6-11 words)."""
    template = TEMPLATES[rng.integers(len(TEMPLATES))]
    pick = lambda items: items[rng.integers(len(items))]  # noqa: E731
    fill = {
        "det": lambda: pick(DETERMINERS),
        "adj": lambda: pick(ADJECTIVES),
        "noun": lambda: pick(nouns()),
        "prep": lambda: pick(PREPOSITIONS),
        "name": lambda: pick(NAMES),
        "verb": lambda: pick(VERBS)[0],
        "past": lambda: pick(VERBS)[1],
        "time": lambda: pick(TIMES),
        "pron": lambda: pick(PRONOUNS),
        "adv": lambda: pick(ADVERBS),
    }
    words = re.sub(r"\{(\w+)\}", lambda m: fill[m.group(1)](), template).split()
    # "a" becomes "an" before a vowel-initial word.
    for i, word in enumerate(words[:-1]):
        if word == "a" and words[i + 1][0] in "aeiou":
            words[i] = "an"
    return " ".join(words)
