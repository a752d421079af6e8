//! Validated command-line values: every numeric option is parsed by one of these, so a value
//! that means nothing (`--jobs 0`, `--lr NaN`, `--tolerance inf`, `--split NaN,0.5,0.5`) is
//! refused by clap with one line naming the option and what was expected, before any command
//! runs or writes anything.
//!
//! Each parser is a `value_parser` for clap; its error ([`ValueError`]) says what the option
//! expects. Lists (`value_delimiter = ','`) are checked element by element here, and as a
//! whole (duplicates, sums) by the command that reads them, through [`distinct`].

/// Why a command-line value was refused: what was expected, and what was given.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ValueError {
    /// A count of 0.
    #[error("expected a whole number of at least 1, got 0")]
    ZeroCount,
    /// A count that is not a whole number (the text as given).
    #[error("expected a whole number of at least 1, got '{0}'")]
    NotACount(String),
    /// Not a number (the text as given).
    #[error("expected a number, got '{0}'")]
    NotANumber(String),
    /// NaN or infinite (the text as given).
    #[error("expected a finite number, got '{0}'")]
    NotFinite(String),
    /// A number that must be above 0 and is not.
    #[error("expected a finite number above 0, got {0}")]
    NotPositive(f64),
    /// A positive number that rounds to 0 or infinity in `f32` (the text as given).
    #[error("expected a finite number above 0 that fits in 32 bits, got '{0}'")]
    NotF32(String),
    /// A negative number where at least 0 is expected.
    #[error("expected a finite number of at least 0, got {0}")]
    Negative(f64),
    /// A number outside [0, 1).
    #[error("expected a fraction in [0, 1), got {0}")]
    NotAFraction(f64),
    /// A number outside [0, 1].
    #[error("expected a fraction in [0, 1], got {0}")]
    NotAShare(f64),
    /// A compression ratio below 1.
    #[error("expected a compression ratio of at least 1 (prunable weights / kept ones), got {0}")]
    NotACompression(f64),
}

/// A count of at least 1 (members, jobs, threads, batch sizes, epochs, samples).
///
/// # Errors
/// Not an integer, or 0.
pub fn count(text: &str) -> Result<usize, ValueError> {
    match text.trim().parse::<usize>() {
        Ok(0) => Err(ValueError::ZeroCount),
        Ok(n) => Ok(n),
        Err(_) => Err(ValueError::NotACount(text.to_string())),
    }
}

/// A 64-bit count of at least 1 (calibration samples, MiB).
///
/// # Errors
/// Not an integer, or 0.
pub fn count_u64(text: &str) -> Result<u64, ValueError> {
    count(text).map(|n| n as u64)
}

fn finite(text: &str) -> Result<f64, ValueError> {
    let value: f64 = text.trim().parse().map_err(|_| ValueError::NotANumber(text.to_string()))?;
    if !value.is_finite() {
        return Err(ValueError::NotFinite(text.to_string()));
    }
    Ok(value)
}

/// A finite number above 0 (learning rates, timeouts).
///
/// # Errors
/// Not a number, not finite, or not above 0.
pub fn positive(text: &str) -> Result<f64, ValueError> {
    let value = finite(text)?;
    if value <= 0.0 {
        return Err(ValueError::NotPositive(value));
    }
    Ok(value)
}

/// [`positive`] as an `f32` (the trainer's learning rate), refusing values `f32` cannot hold.
///
/// # Errors
/// As [`positive`], or a value that rounds to 0 or infinity in `f32`.
pub fn positive_f32(text: &str) -> Result<f32, ValueError> {
    let value = positive(text)? as f32;
    if !(value.is_finite() && value > 0.0) {
        return Err(ValueError::NotF32(text.to_string()));
    }
    Ok(value)
}

/// A finite number of at least 0 (tolerances).
///
/// # Errors
/// Not a number, not finite, or negative.
pub fn non_negative(text: &str) -> Result<f64, ValueError> {
    let value = finite(text)?;
    if value < 0.0 {
        return Err(ValueError::Negative(value));
    }
    Ok(value)
}

/// A fraction in [0, 1) (sparsities, momentum).
///
/// # Errors
/// Not a number, or outside [0, 1).
pub fn fraction(text: &str) -> Result<f64, ValueError> {
    let value = finite(text)?;
    if !(0.0..1.0).contains(&value) {
        return Err(ValueError::NotAFraction(value));
    }
    Ok(value)
}

/// [`fraction`] as an `f32`.
///
/// # Errors
/// As [`fraction`].
pub fn fraction_f32(text: &str) -> Result<f32, ValueError> {
    fraction(text).map(|v| v as f32)
}

/// A share in [0, 1] (one of the train, val and test fractions of a zoo split).
///
/// # Errors
/// Not a number, or outside [0, 1].
pub fn share(text: &str) -> Result<f64, ValueError> {
    let value = finite(text)?;
    if !(0.0..=1.0).contains(&value) {
        return Err(ValueError::NotAShare(value));
    }
    Ok(value)
}

/// A compression ratio: a finite number of at least 1 (1 = nothing pruned).
///
/// # Errors
/// Not a number, not finite, or below 1.
pub fn compression(text: &str) -> Result<f64, ValueError> {
    let value = finite(text)?;
    if value < 1.0 {
        return Err(ValueError::NotACompression(value));
    }
    Ok(value)
}

/// The first value of `values` that an earlier one equals (within `1e-9` relative), if any:
/// a list option such as `--compression 2,2` would otherwise run every task twice.
pub fn distinct(values: &[f64]) -> Option<f64> {
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs()).max(1.0);
    values.iter().enumerate().find(|(i, v)| values[..*i].iter().any(|w| close(**v, *w))).map(|(_, v)| *v)
}

/// The first key given twice in `name=value` assignments (`--opt`), if any: which one would
/// win is a guess, so a repeated key is refused rather than resolved.
pub fn repeated_key<S: AsRef<str>>(assignments: &[S]) -> Option<String> {
    let keys: Vec<&str> =
        assignments.iter().map(|a| a.as_ref().split_once('=').map_or(a.as_ref(), |(k, _)| k).trim()).collect();
    keys.iter().enumerate().find(|(i, k)| keys[..*i].contains(k)).map(|(_, k)| k.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_refuse_zero_negative_and_non_numbers() {
        assert_eq!(count("3"), Ok(3));
        for bad in ["0", "-1", "1.5", "NaN", "", "18446744073709551616"] {
            assert!(count(bad).is_err(), "{bad}");
        }
        assert_eq!(count("0").unwrap_err().to_string(), "expected a whole number of at least 1, got 0");
        assert_eq!(count("x").unwrap_err().to_string(), "expected a whole number of at least 1, got 'x'");
    }

    #[test]
    fn numbers_refuse_nan_infinity_and_values_outside_their_meaning() {
        for bad in ["NaN", "nan", "inf", "-inf", "0", "-1", "x"] {
            assert!(positive(bad).is_err(), "{bad}");
        }
        assert_eq!(positive("1e-3"), Ok(1e-3));
        assert!(positive_f32("1e-60").is_err(), "rounds to 0 in f32");
        assert!(positive_f32("1e60").is_err(), "infinite in f32");
        assert_eq!(non_negative("0"), Ok(0.0));
        assert!(non_negative("NaN").is_err() && non_negative("-0.1").is_err());
        assert!(fraction("1").is_err() && fraction("NaN").is_err() && fraction("-0.1").is_err());
        assert_eq!(fraction("0.5"), Ok(0.5));
        assert_eq!(share("1"), Ok(1.0));
        assert!(share("1.01").is_err() && share("NaN").is_err());
        assert!(compression("0.5").is_err() && compression("inf").is_err() && compression("NaN").is_err());
        assert_eq!(compression("1"), Ok(1.0));
        assert_eq!(fraction("1").unwrap_err().to_string(), "expected a fraction in [0, 1), got 1");
        assert_eq!(positive("inf").unwrap_err().to_string(), "expected a finite number, got 'inf'");
    }

    #[test]
    fn repeated_list_values_and_option_keys_are_found() {
        assert_eq!(distinct(&[2.0, 4.0, 2.0]), Some(2.0));
        assert_eq!(distinct(&[0.5, 0.75]), None);
        assert_eq!(repeated_key(&["a=1", "b=2", " a =3"]), Some("a".into()));
        assert_eq!(repeated_key(&["a=1", "ab=2"]), None);
    }
}
