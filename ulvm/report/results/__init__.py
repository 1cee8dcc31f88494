"""The results room: records of runs read into tables, the statistics that say which differences are
more than noise, and the paper's claims checked against them. Nothing here draws (`ulvm.report.plots`
does).

    records.py     records -> runs tables, summaries over seeds, Table 1, transfer, comparison, throughput
    statistics.py  seed-level tests (Welch, hierarchical bootstrap), this build against the book's record,
                   paired per-image tests
    claims.py      the claims scorecard and the arithmetic of the paper's own numbers
"""
from .claims import dsc_from_precision_recall, implied_by_acc_se_sp, scorecard
from .records import (
    METRIC_NAMES,
    MODEL_LABELS,
    best_median_worst,
    configuration_name,
    configuration_of,
    load_recorded_runs,
    mean_std,
    model_comparison_table,
    paper_order,
    read_json_folder,
    runs_table,
    seed_means,
    seed_spread,
    seed_statistics,
    summary_table,
                      table1,
    throughput_table,
    transfer_matrix,
)
from .statistics import (
    POINT,
    comparable,
    consistency,
    hierarchical_bootstrap,
    paired_comparison,
    paired_per_image,
    paired_table,
    per_image_matrix,
    per_seed,
    seed_level_table,
    this_build_table,
    welch_test,
)

__all__ = ["METRIC_NAMES", "MODEL_LABELS", "POINT", "best_median_worst", "comparable", "configuration_name",
           "configuration_of", "consistency", "dsc_from_precision_recall", "hierarchical_bootstrap",
           "implied_by_acc_se_sp", "load_recorded_runs", "mean_std", "model_comparison_table",
           "paired_comparison", "paired_per_image", "paired_table", "paper_order", "per_image_matrix",
           "per_seed", "read_json_folder", "runs_table", "scorecard", "seed_level_table", "seed_means",
           "seed_spread", "seed_statistics", "summary_table", "table1", "this_build_table",
           "throughput_table", "transfer_matrix", "welch_test"]
