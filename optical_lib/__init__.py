"""OPTICAL study library: optimal-transport distillation for cross-lingual retrieval.

Modules (one concept each): ``paths`` (where data lives), ``fetch`` (checksums and
downloads), ``layout`` (where results live, atomic writes, claims), ``models`` (the encoder
family and its prompts), ``ot`` (Sinkhorn and the OPTICAL loss), ``data`` (v1 loaders, language
metadata and diversity sampling), ``multiway`` (NTREX-128 and FLORES-200, the v2 splits and the
fixed-content sampler), ``retrieval`` (encode, embedding cache and search),
``evaluate`` (metrics and statistics), ``distill`` (training), ``experiment`` (one setting
of the study), ``tune`` (hyper-parameters on development languages), ``grid`` (the papermill
sweep, locally or on Dask), ``analysis`` (tables, tests and the answer from result files) and
``plots`` (figures).
"""

__version__ = "0.1.0"
