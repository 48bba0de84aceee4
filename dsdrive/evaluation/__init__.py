"""Stage 4, evaluation: metrics, open loop, PDM score, closed loop, statistics and reports.

Modules:
    metrics/           L2 and collision (ST-P3 and UniAD protocols), risk metrics (Diff_Risk)
    open_loop          ``dsdrive open-loop``: planners scored on held-out planning samples
    open_loop_report   the HTML report of the worst samples drawn in BEV
    statistics         bootstrap-by-scene confidence intervals and paired differences
    cross_validate     ``dsdrive cross-validate``: leave-scenes-out folds x seeds
    pdm_score          ``dsdrive pdm-score``: NAVSIM-style PDM score of every planning sample
    drivable_area      the drivable surface of a scenario map (DAC)
    closed_loop/       ``dsdrive closed-loop``: MetaDrive rollouts, controller, metrics, report
    report_common      the look shared by the HTML reports
"""
