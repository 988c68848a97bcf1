"""dire: DiRe (diversity-promoting regularization) for dataset condensation.

The folders follow the data flow; a stage imports only the stages above it
(``tests/test_layout.py`` checks this and that there is no import cycle)::

    runs.py         run folders named by config hashes, atomic writes, config fields with help
    distributed.py  under torchrun: rank, world size, each rank's static share of a list, barrier
    regularizer.py  the paper's DiRe terms (CD, CDM, EDM; log-det) on embeddings      ┐ public
    metrics.py      Vendi score, Coverage (PRDC), intra-class cosine                   ┘ face
       │
    data/           datasets by name, augmentation (SRe2L-style, DSA), ZCA, uint8 pixels
       │
    nets/           model registry, training loop and recipes, teachers, real embedding
       │            banks, MTT expert trajectories
       │
    synthesis/      the shared loop (base.py) and one registered class per method
       │
    evaluation/     student protocols behind one registry: soft labels, DC hard labels
       │
    experiments/    config.py (every default), pipeline.py (one experiment end to end),
       │            drivers.py (compare, ablation, cross-architecture), sweep.py, cost.py
       │
    report/         tables, plots, notebook parameter checks, the papermill runner and its report page,
       │            the explorer's cached-experiment views
       │
    cli.py          the ``dire`` command

Import graph between the stages (an arrow reads "imports"; a stage may also import any stage further
down its chain directly, e.g. synthesis imports data)::

    cli ──► report ──► experiments ──┬──► evaluation ──┐
                                     ├──► synthesis ───┴──► nets ──► data
                                     └──► metrics               │
                                               synthesis, nets ─┴──► regularizer

    runs.py is imported by nets, synthesis, evaluation, experiments, report and cli; distributed.py by
    synthesis, evaluation, experiments and cli.
"""

__version__ = "0.1.0"
