# Shared by the make_*.R scripts of this folder: a minimal JSON writer (no jsonlite on this
# machine), the reference file's header and where the files are.  Not run on its own.
#
# Every script starts with
#   script <- sub("^--file=", "", grep("^--file=", commandArgs(FALSE), value = TRUE))
#   source(file.path(dirname(script), "_common.R"))
# so that `Rscript path/to/make_X.R` works from any working directory: inputs are read and
# outputs written next to the script.
if (!exists("script") || length(script) != 1 || !file.exists(script))
  stop("run the make_*.R scripts with Rscript (they set `script` from its --file)")

ref_dir <- dirname(script)

# Path of a file in this folder (an input, or the JSON a script writes).
ref_file <- function(...) file.path(ref_dir, ...)

# ---- minimal JSON writer ------------------------------------------------------------------
# Numbers with 17 significant digits (they read back to the same double); non-finite numbers
# as the strings "NaN", "Inf", "-Inf", "NA" (tests/r_reference.py turns them back).  A list
# with names is an object, without names an array; a matrix is an array of its rows; a
# length-1 vector is a scalar unless wrapped in I() (then a 1-element array).
json_num <- function(v) {
  if (is.na(v) && !is.nan(v)) return("\"NA\"")
  if (is.nan(v)) return("\"NaN\"")
  if (is.infinite(v)) return(if (v > 0) "\"Inf\"" else "\"-Inf\"")
  sprintf("%.17g", v)
}
json_str <- function(s) paste0("\"", gsub("\"", "\\\\\"", gsub("\\\\", "\\\\\\\\", s)), "\"")
to_json <- function(x) {
  if (is.null(x)) return("null")
  if (is.list(x)) {
    if (!is.null(names(x))) {
      items <- mapply(function(k, v) paste0(json_str(k), ":", to_json(v)), names(x), x)
      return(paste0("{", paste(items, collapse = ","), "}"))
    }
    return(paste0("[", paste(vapply(x, to_json, ""), collapse = ","), "]"))
  }
  if (is.matrix(x)) {
    rows <- lapply(seq_len(nrow(x)), function(i) as.vector(x[i, ]))
    return(to_json(lapply(rows, function(r) I(r))))
  }
  vals <- if (is.character(x)) vapply(x, json_str, "") else
    if (is.logical(x)) ifelse(x, "true", "false") else vapply(as.double(x), json_num, "")
  if (length(x) == 1 && !inherits(x, "AsIs")) return(vals[[1]])
  paste0("[", paste(vals, collapse = ","), "]")
}

# ---- the reference file -------------------------------------------------------------------
# The first fields of every reference file: the script that wrote it and the versions of R
# and of the package whose results it holds (e.g. "survival" gives survival_version).
reference_header <- function(package) {
  header <- list(generated_by = paste0("tests/data/r_reference/", basename(script)),
                 r_version = R.version.string)
  header[[paste0(package, "_version")]] <- as.character(packageVersion(package))
  header
}

# Write `ref` (a named list) as JSON to `name` in this folder.
write_reference <- function(ref, name) {
  out_file <- ref_file(name)
  writeLines(to_json(ref), out_file)
  cat("wrote", out_file, "\n")
}
