# End-to-end reference for tests/test_analysis_issue16_trial.py: the issue-16 statistics of
# `hu-roi analyze` recomputed in R from the committed inputs
#   tests/data/r_reference/issue16_trial/clinical.csv, measurements.csv
# (the deterministic synthetic trial of scripts/make_synthetic_trial.py, default seed).
#
# Run from any directory:
#   Rscript tests/data/r_reference/make_trial_reference_issue16.R
# It writes tests/data/r_reference/issue16_trial_reference.json (committed; the test reads
# it and does not need R).
#
# Data preparation written out here independently of hu-roi: the irradiated target ROI of
# each patient (one per patient in these inputs), HU change vs T0 and percent change; HU at a
# timepoint whose nominal date (date_rt + 91 / 182 days) is not before the death is left
# out (hu-roi's default); VAS/OMED of patients alive at the timepoint.
script <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
source(file.path(dirname(script), "_common.R"))  # JSON writer, header, ref_file()
suppressPackageStartupMessages(library(survival))
dir <- ref_file("issue16_trial")
clin <- read.csv(file.path(dir, "clinical.csv"), stringsAsFactors = FALSE)
meas <- read.csv(file.path(dir, "measurements.csv"), stringsAsFactors = FALSE)
for (d in c("date_diagnosis", "date_rt", "date_death", "date_last_contact"))
  clin[[d]] <- as.Date(ifelse(clin[[d]] == "", NA, clin[[d]]))
alive <- function(days) is.na(clin$date_death) | clin$date_death > clin$date_rt + days
alive_days <- c(T0 = 0, T1 = 14, T2 = 91, T3 = 182)

m <- meas[meas$kind == "target" & tolower(as.character(meas$irradiated)) == "true" &
            meas$qc_status != "fail" & !is.na(meas$mean_hu), ]
stopifnot(!any(duplicated(m[, c("patient_id", "timepoint")])))
hu <- function(tp) m$mean_hu[match(paste(clin$patient_id, tp), paste(m$patient_id, m$timepoint))]
h0 <- hu("T0")
changes <- list()
for (tp in c("T2", "T3")) {
  h <- hu(tp)
  h[!alive(alive_days[[tp]])] <- NA
  changes[[paste0("delta_hu_", tp)]] <- h - h0
  changes[[paste0("pct_delta_", tp)]] <- ifelse(abs(h0) < 1, NA, 100 * (h - h0) / h0)
}

w1 <- function(x, ...) {
  r <- suppressWarnings(wilcox.test(x, conf.int = TRUE, ...))
  list(n = length(x), statistic = unname(r$statistic), p_value = r$p.value,
       estimate = unname(r$estimate), ci_low = r$conf.int[1], ci_high = r$conf.int[2])
}
w2 <- function(x, y) {
  r <- suppressWarnings(wilcox.test(x, y, conf.int = TRUE))
  list(statistic = unname(r$statistic), p_value = r$p.value, estimate = unname(r$estimate),
       ci_low = r$conf.int[1], ci_high = r$conf.int[2], method = r$method)
}
hu_ref <- list()
for (col in names(changes)) {
  x <- changes[[col]]
  a <- x[clin$arm == "IMRT" & !is.na(x)]
  b <- x[clin$arm == "3DCRT" & !is.na(x)]
  hu_ref[[col]] <- list(
    IMRT = list(r_default = w1(a), r_normal = w1(a, exact = FALSE, correct = TRUE)),
    `3DCRT` = list(r_default = w1(b), r_normal = w1(b, exact = FALSE, correct = TRUE)),
    between_r = w2(a, b))
}

pain_ref <- list()
for (measure in c("vas", "omed")) for (tp in c("T0", "T1", "T2", "T3")) {
  v <- clin[[paste0(measure, "_", tp)]]
  ok <- alive(alive_days[[tp]]) & !is.na(v)
  pain_ref[[paste0(toupper(measure), "_", tp)]] <-
    w2(v[ok & clin$arm == "IMRT"], v[ok & clin$arm == "3DCRT"])
}

surv_ref <- list()
for (origin in c("diagnosis", "rt")) {
  start <- if (origin == "diagnosis") clin$date_diagnosis else clin$date_rt
  end <- ifelse(is.na(clin$date_death), clin$date_last_contact, clin$date_death)
  months <- as.numeric(end - as.numeric(start)) / 30.4375
  death <- as.integer(!is.na(clin$date_death))
  arms <- list()
  for (arm in c("IMRT", "3DCRT")) {
    sel <- clin$arm == arm
    fit <- survfit(Surv(months[sel], death[sel]) ~ 1)
    s <- summary(fit, times = c(3, 6))
    arms[[arm]] <- list(times = I(s$time), survival = I(s$surv), lower = I(s$lower),
                        upper = I(s$upper), n_risk = I(s$n.risk))
  }
  sd <- survdiff(Surv(months, death) ~ clin$arm)
  grp <- sub("clin\\$arm=", "", names(sd$n))
  arms$logrank <- list(groups = I(grp), observed = I(unname(sd$obs)),
                       expected = I(unname(sd$exp)), statistic = sd$chisq)
  surv_ref[[origin]] <- arms
}

fract_ref <- list()
for (tp in c("T2", "T3")) {
  loss <- sapply(c("ant", "mid", "post"), function(site) {
    h0 <- clin[[paste0("height_", site, "_T0_mm")]]
    ht <- clin[[paste0("height_", site, "_", tp, "_mm")]]
    ifelse(h0 > 0, (h0 - ht) / h0, NA)
  })
  vcf_known <- apply(!is.na(loss), 1, any)
  vcf <- apply(loss > 0.2, 1, function(r) any(r, na.rm = TRUE))
  flag <- tolower(as.character(clin[[paste0("fracture_", tp)]]))
  flag_known <- flag %in% c("true", "false")
  status_known <- flag_known | vcf_known
  yes <- (flag == "true") | vcf
  sel <- alive(alive_days[[tp]]) & status_known
  tab <- table(factor(clin$arm[sel], levels = c("IMRT", "3DCRT")), factor(yes[sel], levels = c(FALSE, TRUE)))
  tab <- tab[rowSums(tab) > 0, colSums(tab) > 0, drop = FALSE]
  e <- suppressWarnings(chisq.test(tab, correct = FALSE))$expected
  fract_ref[[tp]] <- list(
    fisher_p = if (all(dim(tab) >= 2)) fisher.test(tab)$p.value else NA,
    cochran_ok = !(any(e < 1) || sum(e < 5) > 0.2 * length(e)),
    patients_imrt = I(sort(clin$patient_id[sel & yes & clin$arm == "IMRT"])),
    patients_crt = I(sort(clin$patient_id[sel & yes & clin$arm == "3DCRT"])))
}

ref <- c(reference_header("survival"), list(
  hu = hu_ref, pain = pain_ref, survival = surv_ref, fractures = fract_ref
))
write_reference(ref, "issue16_trial_reference.json")
