"""View models: shape the typed report and the analysis into the DataFrames the views draw.

Every function takes the typed ``Report`` (``analysis.report``), an ``Analysis``,
one of its typed results or Tables, and returns a pandas DataFrame (or a sentence
from ``wording``) in the shape a chart or table wants: long form for stacked bars,
rank x step for heatmaps. Values are the analysis', only selected, renamed,
pivoted, averaged over ranks for a headline or subtracted (deltas for Compare).
No streamlit import, so these are tested without a server; ``data`` caches them
per selection. One module per job; this package only re-exports them, so views
call ``model.<name>``:

- ``basics``: rank labels, report numbers as floats
- ``verdict``: straggler sentences, headline figures, straggler and findings tables
- ``ranks``: rank rows, imbalance, kernels, GPU measures
- ``steps``: the breakdown Table and the diagnosis' per-step evidence and marks
- ``comms``: collectives; ``compare``: run A against run B
- ``telemetry``: samples over time; ``wholerun``: the light layer's whole run
- ``many_ranks``: which ranks a chart draws one by one, and the rest's summary
- ``memory``: peak allocated and reserved per rank, and the GPUs' capacity
"""

from rankscope.dashboard.app.model.basics import (
    finite_mean as finite_mean,
)
from rankscope.dashboard.app.model.basics import (
    num as num,
)
from rankscope.dashboard.app.model.basics import (
    rank_label as rank_label,
)
from rankscope.dashboard.app.model.basics import (
    rank_of as rank_of,
)
from rankscope.dashboard.app.model.basics import (
    short_name as short_name,
)
from rankscope.dashboard.app.model.comms import (
    COLLECTIVE_PARTS as COLLECTIVE_PARTS,
)
from rankscope.dashboard.app.model.comms import (
    MAX_LAST_NAMED as MAX_LAST_NAMED,
)
from rankscope.dashboard.app.model.comms import (
    _last_to_arrive as _last_to_arrive,
)
from rankscope.dashboard.app.model.comms import (
    arrival_lag_matrix as arrival_lag_matrix,
)
from rankscope.dashboard.app.model.comms import (
    collective_time_by_rank as collective_time_by_rank,
)
from rankscope.dashboard.app.model.comms import (
    collective_time_long as collective_time_long,
)
from rankscope.dashboard.app.model.comms import (
    collectives_frame as collectives_frame,
)
from rankscope.dashboard.app.model.comms import (
    group_lag_matrix as group_lag_matrix,
)
from rankscope.dashboard.app.model.comms import (
    groups_frame as groups_frame,
)
from rankscope.dashboard.app.model.comms import (
    last_arrival_matrix as last_arrival_matrix,
)
from rankscope.dashboard.app.model.comms import (
    pipeline_stages_long as pipeline_stages_long,
)
from rankscope.dashboard.app.model.comms import (
    pipeline_step_blocks as pipeline_step_blocks,
)
from rankscope.dashboard.app.model.compare import (
    COMPARE_METRICS as COMPARE_METRICS,
)
from rankscope.dashboard.app.model.compare import (
    compare_long as compare_long,
)
from rankscope.dashboard.app.model.compare import (
    compare_metrics as compare_metrics,
)
from rankscope.dashboard.app.model.compare import (
    compare_rank_matrix as compare_rank_matrix,
)
from rankscope.dashboard.app.model.compare import (
    compare_ranks as compare_ranks,
)
from rankscope.dashboard.app.model.many_ranks import (
    BAND_BINS as BAND_BINS,
)
from rankscope.dashboard.app.model.many_ranks import (
    MAX_BAR_RANKS as MAX_BAR_RANKS,
)
from rankscope.dashboard.app.model.many_ranks import (
    MAX_EXTRA_LINES as MAX_EXTRA_LINES,
)
from rankscope.dashboard.app.model.many_ranks import (
    MAX_LINE_RANKS as MAX_LINE_RANKS,
)
from rankscope.dashboard.app.model.many_ranks import (
    MAX_TABLE_RANKS as MAX_TABLE_RANKS,
)
from rankscope.dashboard.app.model.many_ranks import (
    band as band,
)
from rankscope.dashboard.app.model.many_ranks import (
    drawn_ranks as drawn_ranks,
)
from rankscope.dashboard.app.model.many_ranks import (
    limit_matrix as limit_matrix,
)
from rankscope.dashboard.app.model.many_ranks import (
    limit_rank_bars as limit_rank_bars,
)
from rankscope.dashboard.app.model.many_ranks import (
    limit_rank_boxes as limit_rank_boxes,
)
from rankscope.dashboard.app.model.many_ranks import (
    limit_rank_rows as limit_rank_rows,
)
from rankscope.dashboard.app.model.many_ranks import (
    other_ranks_label as other_ranks_label,
)
from rankscope.dashboard.app.model.many_ranks import (
    outlier_order as outlier_order,
)
from rankscope.dashboard.app.model.many_ranks import (
    shown_ranks as shown_ranks,
)
from rankscope.dashboard.app.model.memory import (
    CAPACITY_LINE_SHARE as CAPACITY_LINE_SHARE,
)
from rankscope.dashboard.app.model.memory import (
    memory_bars as memory_bars,
)
from rankscope.dashboard.app.model.memory import (
    memory_capacity_gib as memory_capacity_gib,
)
from rankscope.dashboard.app.model.ranks import (
    IDLE_REASONS as IDLE_REASONS,
)
from rankscope.dashboard.app.model.ranks import (
    PART_COLOURS as PART_COLOURS,
)
from rankscope.dashboard.app.model.ranks import (
    STEP_PARTS as STEP_PARTS,
)
from rankscope.dashboard.app.model.ranks import (
    breakdown_long as breakdown_long,
)
from rankscope.dashboard.app.model.ranks import (
    idle_long as idle_long,
)
from rankscope.dashboard.app.model.ranks import (
    imbalance_frame as imbalance_frame,
)
from rankscope.dashboard.app.model.ranks import (
    kernels_frame as kernels_frame,
)
from rankscope.dashboard.app.model.ranks import (
    ranks_frame as ranks_frame,
)
from rankscope.dashboard.app.model.ranks import (
    utilisation_frame as utilisation_frame,
)
from rankscope.dashboard.app.model.ranks import (
    utilisation_long as utilisation_long,
)
from rankscope.dashboard.app.model.steps import (
    MARK_COLUMNS as MARK_COLUMNS,
)
from rankscope.dashboard.app.model.steps import (
    PER_STEP_COLUMNS as PER_STEP_COLUMNS,
)
from rankscope.dashboard.app.model.steps import (
    finding_step as finding_step,
)
from rankscope.dashboard.app.model.steps import (
    per_step_frame as per_step_frame,
)
from rankscope.dashboard.app.model.steps import (
    per_step_matrix as per_step_matrix,
)
from rankscope.dashboard.app.model.steps import (
    rank_step_matrix as rank_step_matrix,
)
from rankscope.dashboard.app.model.steps import (
    slowest_step as slowest_step,
)
from rankscope.dashboard.app.model.steps import (
    stall_marks as stall_marks,
)
from rankscope.dashboard.app.model.steps import (
    step_rows as step_rows,
)
from rankscope.dashboard.app.model.steps import (
    steps_by_rank as steps_by_rank,
)
from rankscope.dashboard.app.model.steps import (
    steps_frame as steps_frame,
)
from rankscope.dashboard.app.model.steps import (
    table_matrix as table_matrix,
)
from rankscope.dashboard.app.model.telemetry import (
    TELEMETRY_LABELS as TELEMETRY_LABELS,
)
from rankscope.dashboard.app.model.telemetry import (
    telemetry_frame as telemetry_frame,
)
from rankscope.dashboard.app.model.telemetry import (
    telemetry_long as telemetry_long,
)
from rankscope.dashboard.app.model.telemetry import (
    telemetry_start_ns as telemetry_start_ns,
)
from rankscope.dashboard.app.model.telemetry import (
    time_bands as time_bands,
)
from rankscope.dashboard.app.model.verdict import (
    STRAGGLER_COLUMNS as STRAGGLER_COLUMNS,
)
from rankscope.dashboard.app.model.verdict import (
    findings_frame as findings_frame,
)
from rankscope.dashboard.app.model.verdict import (
    headline_numbers as headline_numbers,
)
from rankscope.dashboard.app.model.verdict import (
    joint_saving_sentence as joint_saving_sentence,
)
from rankscope.dashboard.app.model.verdict import (
    rotating_sentence as rotating_sentence,
)
from rankscope.dashboard.app.model.verdict import (
    straggler_next as straggler_next,
)
from rankscope.dashboard.app.model.verdict import (
    straggler_ranks as straggler_ranks,
)
from rankscope.dashboard.app.model.verdict import (
    straggler_sentence as straggler_sentence,
)
from rankscope.dashboard.app.model.verdict import (
    stragglers_frame as stragglers_frame,
)
from rankscope.dashboard.app.model.wholerun import (
    MAX_HEAT_COLUMNS as MAX_HEAT_COLUMNS,
)
from rankscope.dashboard.app.model.wholerun import (
    MAX_HEAT_RANKS as MAX_HEAT_RANKS,
)
from rankscope.dashboard.app.model.wholerun import (
    MAX_TELEMETRY_POINTS as MAX_TELEMETRY_POINTS,
)
from rankscope.dashboard.app.model.wholerun import (
    POOL_MIN_FIELDS as POOL_MIN_FIELDS,
)
from rankscope.dashboard.app.model.wholerun import (
    SLOW_STEP_COLUMNS as SLOW_STEP_COLUMNS,
)
from rankscope.dashboard.app.model.wholerun import (
    WHOLE_RUN_STEP_COLUMNS as WHOLE_RUN_STEP_COLUMNS,
)
from rankscope.dashboard.app.model.wholerun import (
    WINDOW_COLUMNS as WINDOW_COLUMNS,
)
from rankscope.dashboard.app.model.wholerun import (
    covering_window as covering_window,
)
from rankscope.dashboard.app.model.wholerun import (
    heatmap_ranks as heatmap_ranks,
)
from rankscope.dashboard.app.model.wholerun import (
    max_pool as max_pool,
)
from rankscope.dashboard.app.model.wholerun import (
    pool_width as pool_width,
)
from rankscope.dashboard.app.model.wholerun import (
    slow_steps as slow_steps,
)
from rankscope.dashboard.app.model.wholerun import (
    step_range_within as step_range_within,
)
from rankscope.dashboard.app.model.wholerun import (
    trace_windows as trace_windows,
)
from rankscope.dashboard.app.model.wholerun import (
    whole_run_heatmap as whole_run_heatmap,
)
from rankscope.dashboard.app.model.wholerun import (
    whole_run_steps as whole_run_steps,
)
from rankscope.dashboard.app.model.wholerun import (
    whole_run_telemetry as whole_run_telemetry,
)
