"""What the book's chapters call: the paper's numbers, the checks against them, plots and workshop tools.

Built on the core (`icl_meta`) and the analyses (`icl_meta.analysis`); nothing below imports from here.

    paper                the paper's numbers and words, typed in once
    report               the "Did it reproduce?" rows (`Check`) and tables
    claims               checks of chapters 3-8 (default setting, restricted models, induction heads, surgery)
    sweep_claims         checks of chapters 10-12 (data sweeps, phase tables and maps)
    architecture_claims  checks of chapters 13-14 (heads, depth, standard block, all-label loss)
    dashboard            every check in one table (the intro)
    chapter              plumbing the chapters share (provenance lines, live retraining, mean ceilings)
    plots                the figures every chapter draws the same way
    interactive          kernel-free Plotly figures (sliders, hover) and the Sphinx hook serving plotly.js
    colab                Colab buttons and install cells from the one repository URL
    execute              the Sphinx hook executing the chapters in parallel before the build reads them
    exercises            the workshop's answer checks and learner copies
"""
