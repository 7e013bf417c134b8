# Reference values for tests/test_reliability.py (hu-roi reliability), computed with R's
# psych::ICC(x, lmer = FALSE) and base R.
#
# Run from any directory:
#   Rscript tests/data/r_reference/make_icc_reference.R
# It writes tests/data/r_reference/icc_reference.json (committed; the tests read it and do
# not need R).  Every case stores its input table (subjects x readers, HU, 2 decimals as a
# measurement CSV holds them) and R's results; non-finite numbers are written as the
# strings "NaN", "Inf", "-Inf", "NA".  The R and psych versions are recorded in the file.
script <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
source(file.path(dirname(script), "_common.R"))  # JSON writer, header, ref_file()
suppressPackageStartupMessages(library(psych))

# ---- one case ---------------------------------------------------------------------------
# x: subjects x readers.  Everything hu-roi reliability writes is computed here the way the
# documentation (docs/reliability.md) defines it, with R's own functions where R has one.
icc_case <- function(x, tag) {
  r <- ICC(x, lmer = FALSE)
  res <- r$results
  pick <- function(type) {
    row <- res[res$type == type, ]
    list(icc = row$ICC, ci_low = row[["lower bound"]], ci_high = row[["upper bound"]],
         f = row$F, df1 = row$df1, df2 = row$df2)
  }
  k <- ncol(x)
  n <- nrow(x)
  vars <- apply(x, 1, var)
  prec <- sqrt(mean(vars))
  df <- n * (k - 1)
  means <- abs(rowMeans(x))
  ok <- means >= 50
  out <- list(
    tag = tag, n = n, k = k, x = x,
    icc2_1 = pick("ICC2"), icc3_1 = pick("ICC3"),
    ms = list(msb = r$stats["MS", "subjects"], msj = r$stats["MS", "Judges"],
              mse = r$stats["MS", "Residual"], msw = r$MSW),
    precision_sd = prec,
    precision_sd_ci = c(sqrt(df * prec^2 / qchisq(0.975, df)),
                        sqrt(df * prec^2 / qchisq(0.025, df))),
    sqrt_msw = sqrt(r$MSW),
    cv_rms_percent = if (any(ok)) 100 * sqrt(mean(vars[ok] / means[ok]^2)) else NaN,
    cv_n = sum(ok),
    lsc = 2.77 * prec
  )
  if (k == 2) {
    d <- x[, 1] - x[, 2]
    tt <- t.test(d)  # the bias and its t interval
    s <- sd(d)
    tq <- qt(0.975, n - 1)
    lo <- mean(d) - 1.96 * s
    hi <- mean(d) + 1.96 * s
    out$ba <- list(
      bias = unname(tt$estimate), bias_ci = as.vector(tt$conf.int), sd_diff = s,
      loa_low = lo, loa_high = hi,
      loa_low_ci = c(lo - tq * s * sqrt(3 / n), lo + tq * s * sqrt(3 / n)),
      loa_high_ci = c(hi - tq * s * sqrt(3 / n), hi + tq * s * sqrt(3 / n))
    )
  }
  out
}

# readings of n subjects by readers with the given biases and noise (HU, 2 decimals)
simulate <- function(n, biases, noise_sd, mean_hu = 150, between_sd = 50) {
  truth <- rnorm(n, mean_hu, between_sd)
  x <- sapply(biases, function(b) truth + b + rnorm(n, 0, noise_sd))
  round(x, 2)
}

cases <- list()

# the worked example of docs/reliability.md (5 vertebrae, two readings)
cases[[length(cases) + 1]] <- icc_case(
  cbind(c(150, 92, 210, 48, 175), c(154, 90, 216, 52, 171)), "worked-example")

set.seed(20261203)
cases[[length(cases) + 1]] <- icc_case(simulate(30, c(0, 4), 6), "two-readers-n30")
set.seed(20261204)
cases[[length(cases) + 1]] <- icc_case(simulate(25, c(0, 3, -5), 7), "three-readers-n25")
set.seed(20261205)
cases[[length(cases) + 1]] <- icc_case(simulate(12, c(0, 0), 40, between_sd = 30),
                                       "two-readings-poor-agreement")
set.seed(20261206)
cases[[length(cases) + 1]] <- icc_case(simulate(8, c(0, 10, -10, 25), 5, mean_hu = 20),
                                       "four-readers-low-hu")
set.seed(20261207)
cases[[length(cases) + 1]] <- icc_case(simulate(3, c(0, 1), 3), "two-readers-n3")

ref <- c(reference_header("psych"), list(
  call = "psych::ICC(x, lmer = FALSE)",
  cases = cases
))
write_reference(ref, "icc_reference.json")
