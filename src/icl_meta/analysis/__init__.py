"""Analyses of trained runs, built on the core (`icl_meta`) and never on the book (`icl_meta.book`).

    readings   where a run's curves end, when they reach a level, the step that stands for a plateau
    heads      what each attention head does: patterns, roles and how abruptly they switch
    surgery    edit one attention pattern of a trained model and measure what it was for
    patching   replace what one layer computes along chosen edges (pattern or values) by a reference
    llm        the three circuit metrics in a pretrained Hugging Face causal LM
    phasemap   which phases each setting shows, and the phase maps of the data sweeps
"""
