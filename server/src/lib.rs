//! vsmmud library.
