# Reference values for tests/test_stats.py, computed with R (stats + survival).
#
# Run from any directory:
#   Rscript tests/data/r_reference/make_reference.R
# It writes tests/data/r_reference/stats_reference.json (committed; the tests read it and
# do not need R).  Every case stores its inputs and R's outputs; non-finite numbers are
# written as the strings "NaN", "Inf", "-Inf", "NA".  The R and survival versions are
# recorded in the file.
script <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
source(file.path(dirname(script), "_common.R"))  # JSON writer, header, ref_file()
suppressPackageStartupMessages(library(survival))

# ---- wilcox.test wrappers --------------------------------------------------------------
wt <- function(...) {
  warns <- character(0)
  res <- withCallingHandlers(wilcox.test(..., conf.int = TRUE),
    warning = function(w) {
      warns <<- c(warns, conditionMessage(w))
      invokeRestart("muffleWarning")
    })
  list(statistic = unname(res$statistic), p_value = res$p.value,
       estimate = unname(res$estimate), ci_low = res$conf.int[1],
       ci_high = res$conf.int[2], conf_level = attr(res$conf.int, "conf.level"),
       method = res$method, warnings = I(warns))
}

rank_sum_case <- function(x, y, exact = NULL, correct = TRUE, conf_level = 0.95,
                          alternative = "two.sided", tag = "") {
  r <- wt(x, y, exact = exact, correct = correct, conf.level = conf_level,
          alternative = alternative)
  list(tag = tag, x = I(x), y = I(y), exact = if (is.null(exact)) NULL else exact,
       correct = correct, conf_level = conf_level, alternative = alternative,
       call = sprintf("wilcox.test(x, y, exact=%s, correct=%s, conf.int=TRUE, conf.level=%s, alternative='%s')",
                      deparse(exact), correct, conf_level, alternative),
       r = r)
}

signed_case <- function(x, y = NULL, mu = 0, exact = NULL, correct = TRUE,
                        conf_level = 0.95, alternative = "two.sided", tag = "") {
  r <- if (is.null(y)) {
    wt(x, mu = mu, exact = exact, correct = correct, conf.level = conf_level,
       alternative = alternative)
  } else {
    wt(x, y, paired = TRUE, mu = mu, exact = exact, correct = correct,
       conf.level = conf_level, alternative = alternative)
  }
  list(tag = tag, x = I(x), y = if (is.null(y)) NULL else I(y), mu = mu,
       exact = if (is.null(exact)) NULL else exact, correct = correct,
       conf_level = conf_level, alternative = alternative, r = r)
}

levels_ <- c(0.8, 0.9, 0.95, 0.98, 0.99)
alts <- c("two.sided", "two.sided", "two.sided", "less", "greater")

# ---- rank-sum, exact branch (no ties, n < 50) -------------------------------------------
set.seed(20240501)
rs_exact <- list()
for (i in 1:40) {
  nx <- sample(3:25, 1); ny <- sample(3:25, 1)
  x <- round(rnorm(nx, 100, 30), 6) + sample(c(0, 20), 1)
  y <- round(rnorm(ny, 100, 30), 6)
  rs_exact[[i]] <- rank_sum_case(x, y, conf_level = sample(levels_, 1),
                                 alternative = sample(alts, 1), tag = "exact-random")
}
# tiny samples: requested level not achievable -> lowered
rs_exact[[41]] <- rank_sum_case(c(1.5, 2.25), c(0.5, 3.75, 4.125), tag = "exact-unachievable")
rs_exact[[42]] <- rank_sum_case(c(10.1, 12.2, 9.3), c(1.1, 2.2, 3.3), conf_level = 0.99,
                                tag = "exact-unachievable")
rs_exact[[43]] <- rank_sum_case(c(5.5), c(1, 2, 3, 4), tag = "exact-n1")

# ---- rank-sum, normal branch (ties, forced normal, large n) -----------------------------
set.seed(20240502)
rs_normal <- list()
for (i in 1:40) {
  nx <- sample(4:40, 1); ny <- sample(4:40, 1)
  digits <- sample(c(0, 0, 1), 1)
  x <- round(rnorm(nx, 10, 4) + sample(c(0, 2), 1), digits)
  y <- round(rnorm(ny, 10, 4), digits)
  rs_normal[[i]] <- rank_sum_case(x, y, correct = sample(c(TRUE, FALSE), 1),
                                  conf_level = sample(levels_, 1),
                                  alternative = sample(alts, 1), tag = "normal-ties")
}
for (i in 41:52) {
  x <- rnorm(sample(5:30, 1), 0, 1); y <- rnorm(sample(5:30, 1), 0.5, 1)
  rs_normal[[i]] <- rank_sum_case(x, y, exact = FALSE, correct = (i %% 2 == 0),
                                  conf_level = sample(levels_, 1), tag = "normal-forced")
}
for (i in 53:58) {
  x <- rnorm(sample(50:70, 1), 0, 1); y <- rnorm(sample(30:60, 1), 0.3, 1)
  rs_normal[[i]] <- rank_sum_case(x, y, conf_level = sample(levels_, 1),
                                  alternative = sample(alts, 1), tag = "normal-large")
}
# the trial's shape: %change of HU, two arms of 30 with rounding to 1 decimal
x <- round(rnorm(30, 15, 20), 1); y <- round(rnorm(30, 5, 20), 1)
rs_normal[[59]] <- rank_sum_case(x, y, tag = "normal-trial-like")

# ---- rank-sum, clamping: no root inside [min(x)-max(y), max(x)-min(y)] ------------------
rs_clamp <- list(
  rank_sum_case(c(10, 10, 11), c(1, 2, 2), conf_level = 0.99, tag = "clamp"),
  rank_sum_case(c(10, 10, 11), c(1, 2, 2), conf_level = 0.95, tag = "clamp"),
  rank_sum_case(c(3, 3, 4), c(1, 1), conf_level = 0.9, tag = "clamp"),
  rank_sum_case(c(5, 6, 6, 7), c(1, 1, 2), conf_level = 0.99, tag = "clamp"),
  rank_sum_case(c(1, 1, 2), c(5, 6, 6, 7), conf_level = 0.95, tag = "clamp"),
  rank_sum_case(c(2, 2, 3), c(2, 3, 3), conf_level = 0.95, correct = FALSE, tag = "clamp"),
  rank_sum_case(c(1, 2, 2), c(8, 9), conf_level = 0.8, alternative = "less", tag = "clamp"),
  rank_sum_case(c(8, 9, 9), c(1, 2), conf_level = 0.8, alternative = "greater", tag = "clamp")
)

# ---- signed-rank, exact branch ----------------------------------------------------------
set.seed(20240503)
sr_exact <- list()
for (i in 1:40) {
  n <- sample(3:30, 1)
  x <- round(rnorm(n, sample(c(0, 0.5), 1), 1), 6)
  sr_exact[[i]] <- signed_case(x, conf_level = sample(levels_, 1),
                               alternative = sample(alts, 1), tag = "exact-random")
}
for (i in 41:50) {
  n <- sample(5:25, 1)
  x <- round(rnorm(n, 100, 10), 6); y <- round(x - rnorm(n, 2, 3), 6)
  sr_exact[[i]] <- signed_case(x, y, conf_level = sample(levels_, 1), tag = "exact-paired")
}
sr_exact[[51]] <- signed_case(c(1.5, 2.5, -0.75), tag = "exact-unachievable")
sr_exact[[52]] <- signed_case(c(1.5, 2.5, -0.75, 3.125), conf_level = 0.95, tag = "exact-unachievable")
sr_exact[[53]] <- signed_case(c(1.5, 2.5, 0.75, 3.125, 4.5), conf_level = 0.99, tag = "exact-unachievable")
sr_exact[[54]] <- signed_case(c(1.1, 2.3, 0.4, 3.7, 4.2, -0.9), mu = 0.25, tag = "exact-mu")

# ---- signed-rank, normal branch (ties, zeros) -------------------------------------------
set.seed(20240504)
sr_normal <- list()
for (i in 1:40) {
  n <- sample(5:45, 1)
  x <- round(rnorm(n, sample(c(0, 1), 1), 2), sample(c(0, 1), 1))
  sr_normal[[i]] <- signed_case(x, correct = sample(c(TRUE, FALSE), 1),
                                conf_level = sample(levels_, 1),
                                alternative = sample(alts, 1), tag = "normal-ties-zeros")
}
for (i in 41:50) {
  n <- sample(8:30, 1)
  x <- round(rnorm(n, 200, 30)); y <- round(x - rnorm(n, 5, 8))
  sr_normal[[i]] <- signed_case(x, y, correct = (i %% 2 == 0),
                                conf_level = sample(levels_, 1), tag = "normal-paired")
}
for (i in 51:56) {
  x <- rnorm(sample(50:80, 1), 0.2, 1)
  sr_normal[[i]] <- signed_case(x, conf_level = sample(levels_, 1),
                                alternative = sample(alts, 1), tag = "normal-large")
}
sr_normal[[57]] <- signed_case(c(0, 0, 1, 2, 2, 3, -1, 0, 4), mu = 0, tag = "zeros")
sr_normal[[58]] <- signed_case(c(2, 2, 3, 3, 5, 1), mu = 2, tag = "zeros-mu")

# ---- signed-rank: conf.level lowered / degenerate in the normal branch ------------------
sr_lowered <- list(
  signed_case(c(1, 1, 2), tag = "lowered"),
  signed_case(c(1, 2, 2, 0), tag = "lowered"),
  signed_case(c(1, 1, 2, 3, 3), conf_level = 0.99, tag = "lowered"),
  signed_case(c(-1, 2, 2, 3), conf_level = 0.95, tag = "lowered"),
  signed_case(c(1, 1, 1, 2, 2), conf_level = 0.9, correct = FALSE, tag = "lowered"),
  signed_case(c(1, 1, 2, 2, 3), conf_level = 0.95, alternative = "greater", tag = "lowered"),
  signed_case(c(-1, -1, -2, -2, -3), conf_level = 0.95, alternative = "less", tag = "lowered"),
  signed_case(c(0, 1), tag = "degenerate"),
  signed_case(c(2, 2, 2), tag = "degenerate")
)

# ---- chi-square ------------------------------------------------------------------------
set.seed(20240505)
chisq_cases <- list()
for (i in 1:36) {
  nr <- sample(2:3, 1); nc <- sample(2:4, 1)
  if (i <= 12) { nr <- 2; nc <- 2 }
  repeat {
    tab <- matrix(sample(0:20, nr * nc, replace = TRUE), nr, nc)
    if (all(rowSums(tab) > 0) && all(colSums(tab) > 0)) break
  }
  correct <- i %% 2 == 0
  res <- suppressWarnings(chisq.test(tab, correct = correct))
  chisq_cases[[i]] <- list(table = tab, correct = correct,
                           r = list(statistic = unname(res$statistic),
                                    p_value = res$p.value,
                                    dof = unname(res$parameter), method = res$method))
}

# ---- Fisher ----------------------------------------------------------------------------
set.seed(20240506)
fisher_cases <- list()
shapes <- list(c(2, 2), c(2, 3), c(2, 4), c(3, 3), c(2, 4), c(3, 4))
for (i in 1:42) {
  sh <- shapes[[(i - 1) %% length(shapes) + 1]]
  repeat {
    tab <- matrix(sample(0:12, prod(sh), replace = TRUE), sh[1], sh[2])
    if (all(rowSums(tab) > 0) && all(colSums(tab) > 0)) break
  }
  res <- fisher.test(tab)
  fisher_cases[[i]] <- list(table = tab, r = list(p_value = res$p.value))
}
# the trial's baseline table shape: 2 arms x 4 categories, n = 30 per arm
tab <- matrix(c(9, 12, 6, 3, 7, 10, 8, 5), nrow = 2, byrow = TRUE)
fisher_cases[[43]] <- list(table = tab, r = list(p_value = fisher.test(tab)$p.value))
tab <- matrix(c(23, 7, 19, 11), nrow = 2, byrow = TRUE)
fisher_cases[[44]] <- list(table = tab, r = list(p_value = fisher.test(tab)$p.value))

# ---- Kaplan-Meier ----------------------------------------------------------------------
km_case <- function(time, event, tag) {
  fit <- survfit(Surv(time, event) ~ 1)
  s <- summary(fit, censored = TRUE)
  q <- quantile(fit, probs = 0.5)
  list(tag = tag, time = I(time), event = I(event),
       r = list(time = I(fit$time), n_risk = I(fit$n.risk), n_event = I(fit$n.event),
                n_censor = I(fit$n.censor), survival = I(fit$surv),
                std_err_log = I(fit$std.err), std_err = I(s$std.err),
                lower = I(fit$lower), upper = I(fit$upper),
                median = unname(q$quantile), median_lower = unname(q$lower),
                median_upper = unname(q$upper)))
}
set.seed(20240507)
km_cases <- list()
for (i in 1:30) {
  n <- sample(8:40, 1)
  time <- round(rexp(n, 1 / 12), sample(c(0, 1), 1)) + 0.5
  event <- rbinom(n, 1, 0.75)
  km_cases[[i]] <- km_case(time, event, "random")
}
km_cases[[31]] <- km_case(c(1, 2, 3, 4), c(1, 1, 1, 1), "S=0.5 exactly")
km_cases[[32]] <- km_case(c(2, 4, 4, 6, 8, 9, 10, 12), c(1, 1, 1, 1, 0, 1, 0, 1), "S=0.5 exactly")
km_cases[[33]] <- km_case(c(1, 2, 3, 5), c(1, 1, 0, 0), "S=0.5 at last event")
km_cases[[34]] <- km_case(c(3, 5, 7, 9, 11), c(0, 1, 0, 1, 0), "median not reached")
km_cases[[35]] <- km_case(c(1, 1, 2, 3, 3, 3, 4, 6), c(1, 0, 1, 1, 1, 0, 1, 1), "ties, S reaches 0")

# ---- log-rank --------------------------------------------------------------------------
set.seed(20240508)
lr_cases <- list()
for (i in 1:30) {
  k <- if (i <= 20) 2 else 3
  n <- sample(15:60, 1)
  group <- sample(c("3DCRT", "IMRT", "other")[1:k], n, replace = TRUE)
  rate <- ifelse(group == "IMRT", 1 / 15, ifelse(group == "3DCRT", 1 / 10, 1 / 8))
  time <- round(rexp(n, rate), sample(c(0, 1), 1)) + 0.5
  event <- rbinom(n, 1, 0.8)
  sd <- survdiff(Surv(time, event) ~ group)
  df <- sum(sd$exp > 0) - 1
  lr_cases[[i]] <- list(time = I(time), event = I(event), group = I(group),
                        r = list(statistic = sd$chisq, dof = df,
                                 p_value = pchisq(sd$chisq, df, lower.tail = FALSE),
                                 observed = I(unname(sd$obs)),
                                 expected = I(unname(sd$exp))))
}

ref <- c(reference_header("survival"), list(
  rank_sum_exact = rs_exact,
  rank_sum_normal = rs_normal,
  rank_sum_clamp = rs_clamp,
  signed_rank_exact = sr_exact,
  signed_rank_normal = sr_normal,
  signed_rank_lowered = sr_lowered,
  chi_square = chisq_cases,
  fisher = fisher_cases,
  kaplan_meier = km_cases,
  logrank = lr_cases
))
write_reference(ref, "stats_reference.json")
