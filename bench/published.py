"""Published numbers the suite's tables are set beside. Data only; each entry cites its source."""

# 000 Table 1: median squared error of the log-density, med (log p_theta(x) - log p*(x))^2.
TABLE1_000 = {
    "source": "000 Table 1",
    "metric": "logp_median_sq_error",
    "targets": ["eight_gaussians", "rings"],
    "values": {
        "ula_ebm": {"eight_gaussians": 1.86, "rings": 5.39},
        "nt_ebm": {"eight_gaussians": 0.97, "rings": 0.62},
        "coopflow": {"eight_gaussians": 58.75, "rings": 7.78},
        "flowmc_ebm": {"eight_gaussians": 0.94, "rings": 0.40},
    },
}

# 000 Table 3: mode-weight MSEs on the four-mode 0.1/0.2/0.3/0.4 mixture.
TABLE3_000 = {
    "source": "000 Table 3",
    "target": "four_mode",
    "columns": {
        "init_weight_mse_vs_ebm": "init wrt E",  # MSE of the init. wrt E_theta
        "neg_weight_mse_vs_ebm": "neg wrt E",  # MSE of the neg. samples wrt E_theta
        "ebm_weight_mse": "E wrt p*",  # MSE of E_theta wrt p*
    },
    "values": {
        "ula_ebm": {"init_weight_mse_vs_ebm": 1.19e-3, "neg_weight_mse_vs_ebm": 1.79e-3, "ebm_weight_mse": 1.24e-3},
        "coopflow": {"init_weight_mse_vs_ebm": 1.21e-1, "neg_weight_mse_vs_ebm": 1.11e-1, "ebm_weight_mse": 1.24e-1},
        "nt_ebm": {"init_weight_mse_vs_ebm": 9.27e-4, "neg_weight_mse_vs_ebm": 3.85e-4, "ebm_weight_mse": 9.87e-4},
        "flowmc_ebm": {"init_weight_mse_vs_ebm": 5.19e-4, "neg_weight_mse_vs_ebm": 3.12e-5,
                       "ebm_weight_mse": 4.29e-4},
    },
}
