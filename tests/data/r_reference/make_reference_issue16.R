# Reference values for tests/test_analysis_conventions.py (issue 16), computed with R.
#
# Run from any directory:
#   Rscript tests/data/r_reference/make_reference_issue16.R
# It writes tests/data/r_reference/issue16_reference.json (committed; the tests read it and
# do not need R).  Non-finite numbers are written as "NaN", "Inf", "-Inf", "NA".
#
# Cases:
# - signed_rank_sas: SAS PROC UNIVARIATE's signed-rank rule written out in R: S = V - n(n+1)/4
#   on the non-zero differences; n <= 20: exact Pr >= |S| (brute-force enumeration of all
#   2^n sign patterns when there are ties, R's psignrank when there are none); n > 20:
#   Student t with n - 1 df.
# - within_arm: wilcox.test(x, conf.int=TRUE) with the three R conventions used by
#   `hu-roi analyze --within-test` (exact default, exact=FALSE correct=TRUE).
# - between_arm: wilcox.test(x, y, conf.int=TRUE) (R interval) on trial-shaped data.
# - km_at: summary(survfit(Surv(time, event) ~ 1), times = c(...)).
# - cochran: chisq.test(tab)$expected and Cochran's rule; fisher.test(tab)$p.value.
script <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
source(file.path(dirname(script), "_common.R"))  # JSON writer, header, ref_file()
suppressPackageStartupMessages(library(survival))

# ---- SAS UNIVARIATE signed rank ---------------------------------------------------------
sas_signed_rank <- function(x, mu = 0) {
  d <- x - mu
  nz <- sum(d == 0)
  d <- d[d != 0]
  n <- length(d)
  r <- rank(abs(d))
  s <- sum(r[d > 0]) - n * (n + 1) / 4
  ties <- any(duplicated(r))
  if (n <= 20) {
    if (ties) {
      # every sign pattern: sums over the first and the second half, then all pairs
      half_sums <- function(rr) {
        if (length(rr) == 0) return(0)
        as.vector(as.matrix(expand.grid(rep(list(c(0, 1)), length(rr)))) %*% rr)
      }
      h <- n %/% 2
      sall <- as.vector(outer(half_sums(r[seq_len(h)]), half_sums(r[-seq_len(h)]), "+")) -
        n * (n + 1) / 4
      p <- mean(abs(sall) >= abs(s) - 1e-9)
      how <- "enumeration"
    } else {
      v <- sum(r[d > 0])
      # Pr(|S| >= |s|), S symmetric: both tails of V
      lo <- n * (n + 1) / 4 - abs(s)
      hi <- n * (n + 1) / 4 + abs(s)
      p <- psignrank(floor(lo + 1e-7), n) + psignrank(ceiling(hi - 1e-7) - 1, n, lower.tail = FALSE)
      if (abs(s) < 1e-9) p <- 1
      how <- "psignrank"
    }
    list(statistic = s, p_value = min(1, p), n = n, n_zeros = nz, exact = TRUE, how = how)
  } else {
    nt <- table(r)
    v <- n * (n + 1) * (2 * n + 1) / 24 - sum(nt^3 - nt) / 48
    t <- s * sqrt((n - 1) / (n * v - s^2))
    list(statistic = s, p_value = 2 * pt(-abs(t), n - 1), n = n, n_zeros = nz,
         exact = FALSE, t = t, how = "t")
  }
}
set.seed(20261203)
sas_cases <- list()
for (i in 1:30) {
  n <- sample(c(3:16, 3:16, 17:20, 21:45), 1)
  digits <- if (n <= 16) sample(c(0, 1, 6), 1) else if (n <= 20) 6 else sample(c(0, 1, 6), 1)
  x <- round(rnorm(n, sample(c(0, 1), 1), 2), digits)
  if (n <= 20 && digits == 6) x <- x[x != 0]
  sas_cases[[i]] <- list(x = I(x), r = sas_signed_rank(x))
}
sas_cases[[31]] <- list(x = I(c(0, 0, 1, 2, 2, 3, -1, 0, 4)), r = sas_signed_rank(c(0, 0, 1, 2, 2, 3, -1, 0, 4)))
sas_cases[[32]] <- list(x = I(c(1.5, -2, 3, 4, 5.5, 6, -7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)),
                        r = sas_signed_rank(c(1.5, -2, 3, 4, 5.5, 6, -7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21)))

# ---- within arm: pseudo-median and CI ---------------------------------------------------
wt1 <- function(x, exact, correct) {
  res <- suppressWarnings(wilcox.test(x, exact = exact, correct = correct, conf.int = TRUE))
  list(statistic = unname(res$statistic), p_value = res$p.value,
       estimate = unname(res$estimate), ci_low = res$conf.int[1], ci_high = res$conf.int[2],
       conf_level = attr(res$conf.int, "conf.level"), method = res$method)
}
set.seed(20261204)
within <- list()
for (i in 1:12) {
  n <- sample(8:30, 1)
  digits <- sample(c(1, 6), 1)
  x <- round(rnorm(n, 10, 25), digits)
  within[[i]] <- list(x = I(x),
                      r_default = wt1(x, NULL, TRUE),
                      r_normal = wt1(x, FALSE, TRUE),
                      sas = sas_signed_rank(x))
}

# ---- between arms: R interval -----------------------------------------------------------
set.seed(20261205)
between <- list()
for (i in 1:10) {
  digits <- sample(c(1, 6), 1)
  x <- round(rnorm(sample(10:30, 1), 15, 20), digits)
  y <- round(rnorm(sample(10:30, 1), 5, 20), digits)
  res <- suppressWarnings(wilcox.test(x, y, conf.int = TRUE))
  between[[i]] <- list(x = I(x), y = I(y),
                       r = list(statistic = unname(res$statistic), p_value = res$p.value,
                                estimate = unname(res$estimate), ci_low = res$conf.int[1],
                                ci_high = res$conf.int[2], method = res$method))
}

# ---- Kaplan-Meier at fixed times ---------------------------------------------------------
set.seed(20261206)
km_at <- list()
for (i in 1:15) {
  n <- sample(10:40, 1)
  time <- round(rexp(n, 1 / 8), sample(c(0, 1), 1)) + 0.25
  event <- rbinom(n, 1, 0.75)
  times <- sort(unique(c(0.1, 3, 6, round(runif(2, 0, max(time)), 2))))
  times <- times[times <= max(time)]
  s <- summary(survfit(Surv(time, event) ~ 1), times = times)
  km_at[[i]] <- list(time = I(time), event = I(event), times = I(times),
                     r = list(time = I(s$time), survival = I(s$surv), std_err = I(s$std.err),
                              lower = I(s$lower), upper = I(s$upper),
                              n_risk = I(s$n.risk), n_event_cum = I(cumsum(s$n.event))))
}

# ---- Cochran's rule and Fisher ----------------------------------------------------------
set.seed(20261207)
cochran <- list()
for (i in 1:20) {
  nc <- sample(2:4, 1)
  repeat {
    tab <- matrix(sample(0:(if (i %% 2) 4 else 15), 2 * nc, replace = TRUE), 2, nc)
    if (all(rowSums(tab) > 0) && all(colSums(tab) > 0)) break
  }
  e <- suppressWarnings(chisq.test(tab, correct = FALSE))$expected
  ok <- !(any(e < 1) || sum(e < 5) > 0.2 * length(e))
  cochran[[i]] <- list(table = tab, r = list(ok = ok, n_below_5 = sum(e < 5),
                                             fisher_p = fisher.test(tab)$p.value))
}

ref <- c(reference_header("survival"), list(
  signed_rank_sas = sas_cases,
  within_arm = within,
  between_arm = between,
  km_at = km_at,
  cochran = cochran
))
write_reference(ref, "issue16_reference.json")
