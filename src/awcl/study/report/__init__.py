"""The study report: ``results.csv``, ``report.md`` and a self-contained ``report.html``.

Everything is read back from the study directory (``study.json`` + every run's ``DONE``
record and files), so ``awcl report DIR`` can be re-run at any time, also on a partly
finished study. Sections without data say so instead of staying silently empty.

One module per job, data flowing one way:

- ``load``: the study directory (typed run records, :mod:`awcl.study.records`) as one
  :class:`Results` (:func:`load_results`), built once;
- ``results``: :class:`Results`, every number and prediction with named selectors (main runs,
  a protocol, label efficiency, the ratio sweep): every section and the console summary read it;
- ``checks``: degenerate, not-learned and indistinguishable runs;
- ``statistics``: pooled metrics and paired differences with bootstrap intervals;
- ``tables`` and ``figures``: the report's tables and matplotlib figures;
- ``facts``: sentences on the pretraining setup, compute, versions and hardware;
- ``sections``: one builder per section, in the order of ``REGISTRY`` (key -> builder);
- ``render``: Markdown, HTML, the console summary (sections picked by key), ``write_report``;
- ``document``: the building blocks (``Section``, ``Table``, ``Image``) and metric names.

This package exports the names other code uses; import them from here.
"""

from awcl.study.report.checks import (
    DEGENERATE_MARGIN,
    DEGENERATE_SHARE,
    degenerate_notes,
    degenerate_runs,
    identical_methods,
    identical_predictions,
    not_learned_runs,
)
from awcl.study.report.document import (
    DISPLAY,
    LOWER_IS_BETTER,
    METHOD_ORDER,
    Image,
    Section,
    Table,
    lower_is_better,
)
from awcl.study.report.facts import (
    per_fold_line,
    pretrain_compute,
    pretrain_setup,
    versions_and_hardware,
)
from awcl.study.report.figures import (
    efficiency_curve,
    image_grid,
    knn_curves,
    pretrain_curves,
    ratio_curve,
)
from awcl.study.report.load import (
    MAX_TABLE_METRICS,
    StudyData,
    downstream_runs,
    find_image,
    knn_histories,
    load_predictions,
    load_results,
    load_study,
    pretrain_history,
    results_table,
    table_metrics,
)
from awcl.study.report.render import (
    SUMMARY_FILE,
    SUMMARY_KEYS,
    ReportFiles,
    render_html,
    render_markdown,
    summary_sections,
    summary_text,
    write_report,
)
from awcl.study.report.results import GROUP_BY, LABEL_COLS, UNIT, Results
from awcl.study.report.sections import (
    ANSWER_TITLE,
    PROTOCOL_TITLES,
    REGISTRY,
    ReportContext,
    answer_section,
    build_sections,
    coarse_fine_section,
    configuration_section,
    confusion_section,
    efficiency_section,
    knn_section,
    overview_section,
    pairwise_section,
    pretrain_curves_section,
    ratio_section,
    run_times_section,
    transfer_section,
    tsne_section,
    versions_section,
)
from awcl.study.report.statistics import (
    N_BOOT,
    aligned,
    cell_interval,
    efficiency_points,
    paired_difference,
    pooled_summary,
    table_intervals,
)
from awcl.study.report.tables import (
    coarse_fine_table,
    efficiency_table,
    knn_table,
    pairwise_tables,
    transfer_table,
)

__all__ = [
    "ANSWER_TITLE",
    "DEGENERATE_MARGIN",
    "DEGENERATE_SHARE",
    "DISPLAY",
    "GROUP_BY",
    "LABEL_COLS",
    "LOWER_IS_BETTER",
    "MAX_TABLE_METRICS",
    "METHOD_ORDER",
    "N_BOOT",
    "PROTOCOL_TITLES",
    "REGISTRY",
    "SUMMARY_FILE",
    "SUMMARY_KEYS",
    "UNIT",
    "Image",
    "ReportContext",
    "ReportFiles",
    "Results",
    "Section",
    "StudyData",
    "Table",
    "aligned",
    "answer_section",
    "build_sections",
    "cell_interval",
    "coarse_fine_section",
    "coarse_fine_table",
    "configuration_section",
    "confusion_section",
    "degenerate_notes",
    "degenerate_runs",
    "downstream_runs",
    "efficiency_curve",
    "efficiency_points",
    "efficiency_section",
    "efficiency_table",
    "find_image",
    "identical_methods",
    "identical_predictions",
    "image_grid",
    "knn_curves",
    "knn_histories",
    "knn_section",
    "knn_table",
    "load_predictions",
    "load_results",
    "load_study",
    "lower_is_better",
    "not_learned_runs",
    "overview_section",
    "paired_difference",
    "pairwise_section",
    "pairwise_tables",
    "per_fold_line",
    "pooled_summary",
    "pretrain_compute",
    "pretrain_curves",
    "pretrain_curves_section",
    "pretrain_history",
    "pretrain_setup",
    "ratio_curve",
    "ratio_section",
    "render_html",
    "render_markdown",
    "results_table",
    "run_times_section",
    "summary_sections",
    "summary_text",
    "table_intervals",
    "table_metrics",
    "transfer_section",
    "transfer_table",
    "tsne_section",
    "versions_and_hardware",
    "versions_section",
    "write_report",
]
