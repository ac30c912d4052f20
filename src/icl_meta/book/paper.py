"""The paper's numbers and words, typed in once: every value the book compares its own measurements with.

Everything else in the book is computed from run artifacts. The figures and tables these come from are
listed, with the chapter that reproduces each, in the Methods page (Methods §Figures).
"""

from __future__ import annotations

from ..config import CIRCUITS

# The chapters that check the paper's claims, in the order of the intro's dashboard: chapter -> (the
# paper's figures and tables it reproduces, what the paper reports there).
CHAPTER_CLAIMS = {
    "3. Three phases": ("Fig 2 left, Fig 3", "three phases, plateaus ≈0.30-0.40, ≈0.75, 1.0"),
    "4. Circuits": ("Fig 2 right, Table 1, Fig 4, Table 2", "NCC / SCC / FCC patterns, metrics switch at boundaries"),
    "5. Circuit-restricted training": ("Fig 13, App C",
                                       "restricted models plateau at their phase's level; FCC-only learns at once"),
    "6. The semi-context circuit": ("Fig 5, App D; Fig 6",
                                    "SCC accuracy p + (1-p)/2; random-label accuracy tracks the SCC"),
    "7. The induction-head baseline": ("Fig 12, App A", "T = 1: a single jump to an induction head"),
    "8. Circuit surgery": ("Table 1, causally (ours)", "each phase's named pattern is necessary in its checkpoint"),
    "9. LLM": ("Fig 10, App N", "GPT2-XL: Chunk Example peaks early, Label Attention later"),
    "10. Data properties I": ("Fig 7a-e, 18", "tasks, classes, noise and Zipf skip or delay phases"),
    "11. Data properties II": ("Fig 15, 19", "bursty contexts skip Phase 1, p_B smooths; one phase at N ≥ 16"),
    "12. Phase maps": ("Phase maps (ours)", "Phase 2 shows where the Bayes ceilings leave it room"),
    "13. Heads": ("Fig 8, 9, 16, 17", "only 1 head shows phases; the heads of smooth models still switch abruptly"),
    "14. Depth and blocks": ("Fig 20-23",
                             "phases at depth 2-3, smooth at 4-5; standard block and all-label loss keep the phases"),
    "15. The Phase-3 mechanism": ("Table 1 (FCC), Fig 4",
                                  "Phase 3 uses layer-1 Chunk Example + layer-2 Label Attention"),
}

# Bayes ceilings (query only, query + label multiset) at K = 64, L = 32, N = 4 for T tasks: the reference
# values chapter 1 recomputes (Methods §Task), averages over problem instances.
REFERENCE_CEILINGS = {2: (0.52, 0.87), 3: (0.36, 0.78), 4: (0.30, 0.72)}

# Plateau accuracy of each phase in the paper's default setting (Fig. 2 left, Table 1).
PAPER_LEVELS = {1: (0.30, 0.40), 2: (0.70, 0.80), 3: (0.99, 1.0)}
# Paper Table 1: phase -> (circuit, the attention pattern of layer 1, that of layer 2).
PAPER_CIRCUITS = {k: (name, *CIRCUITS[name]) for k, name in enumerate(CIRCUITS, start=1)}

# The paper's reading of each data-sweep setting (Fig. 7, 15, 18, 19) as a claim about the phases seen,
# keyed like sweeps.setting_name, with its words. ("sequence", seq): exactly these phases; ("skips", ks):
# none of ks is a plateau, a later phase is reached; ("skips any", ks): at least one of ks is missing, a
# later phase is reached.
THREE = ("sequence", (1, 2, 3))
PAPER_SEEN = {
    "tasks": {"num_tasks-1": (("sequence", (3,)), "single jump"), "num_tasks-2": (THREE, "three phases"),
              "num_tasks-3": (THREE, "three phases"), "num_tasks-4": (THREE, "three phases"),
              "num_tasks-6": (THREE, "jumps persist"), "num_tasks-12": (THREE, "jumps persist, later")},
    "classes": {"num_classes-32": (("skips", (1,)), "small K skips Phase 1"),
                "num_classes-1024": (("skips", (2,)), "large K skips Phase 2")},
    "noise": {"eps-0.5": (("skips", (2,)), "larger ε skips Phase 2"),
              "eps-1.0": (("skips", (1, 2)), "ε = 1 skips Phases 1 and 2")},
    "class_zipf": {"alpha-1.0": (("skips any", (1, 2)), "larger α skips Phase 1 or 2")},
    "burstiness": {"burstiness-2__p_bursty-0.25": (("skips", (1,)), "larger B skips Phase 1")},
    "context": {"num_seq-2": (THREE, "phases"), "num_seq-8": (THREE, "phases up to N = 8"),
                "num_seq-16": (("sequence", (3,)), "single phase at N ≥ 16")},
}

# What the paper reports for each setting of every sweep, in words (the "paper" column of the phase
# tables): the data sweeps' from PAPER_SEEN; the architecture sweeps' (Fig. 8, 16, 20-22), where the
# default (1 head, 2 layers, attention-only, loss at the query) is in every sweep's table.
PAPER_WORDS = {
    **{name: {k: words for k, (_, words) in settings.items()} for name, settings in PAPER_SEEN.items()},
    "heads": {"n_heads-1": "phases", "n_heads-2": "smoother; heads specialise", "n_heads-4": "smooth",
              "n_heads-8": "smooth", "n_heads-16": "smooth"},
    "depth": {"n_layers-2": "phases", "n_layers-3": "phases", "n_layers-4": "smooth", "n_layers-5": "smooth"},
    "standard": {"block-attention": "phases", "block-standard": "phases, same circuits"},
    "all_labels": {"readout-query": "phases", "readout-all_labels": "phases, below 100%"},
}
# The paper's claim "phases" (True) or "smooth" (False) per setting of the heads and depth sweeps.
PAPER_PHASED = {"n_heads": {1: True, 2: False, 4: False, 8: False, 16: False},
                "n_layers": {2: True, 3: True, 4: False, 5: False}}
