//! Bit-field helpers shared by the SMMUv3 formats.
//!
//! Every helper is total: shifts and widths are clamped so that no input
//! can make them panic or overflow.

/// A bit field `[shift + width - 1 : shift]` of a 64-bit (or 32-bit) word.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    /// Position of the least significant bit.
    pub shift: u32,
    /// Number of bits, 1..=64.
    pub width: u32,
}

impl Field {
    /// A field of `width` bits starting at bit `shift`.
    ///
    /// Meant for constants: fails to compile (panics in const evaluation)
    /// when the field does not fit in 64 bits.
    pub const fn new(shift: u32, width: u32) -> Self {
        assert!(width >= 1 && width <= 64 && shift < 64 && shift + width <= 64);
        Field { shift, width }
    }

    /// A one-bit field at `shift`.
    pub const fn bit(shift: u32) -> Self {
        Field::new(shift, 1)
    }

    /// The field's bits in place (`GENMASK(shift + width - 1, shift)`).
    pub const fn mask(self) -> u64 {
        low_mask(self.width) << self.shift
    }

    /// The field's bits in place, for 32-bit registers (truncated).
    pub const fn mask32(self) -> u32 {
        self.mask() as u32
    }

    /// Extracts the field from `value`.
    pub const fn get(self, value: u64) -> u64 {
        (value >> self.shift) & low_mask(self.width)
    }

    /// Extracts the field from a 32-bit register value.
    pub const fn get32(self, value: u32) -> u32 {
        self.get(value as u64) as u32
    }

    /// True when any bit of the field is set in `value`.
    pub const fn is_set(self, value: u64) -> bool {
        value & self.mask() != 0
    }

    /// True when any bit of the field is set in a 32-bit register value.
    pub const fn is_set32(self, value: u32) -> bool {
        self.is_set(value as u64)
    }

    /// `value` with the field replaced by `field` (truncated to the width).
    pub const fn set(self, value: u64, field: u64) -> u64 {
        (value & !self.mask()) | ((field & low_mask(self.width)) << self.shift)
    }

    /// 32-bit version of [`Field::set`].
    pub const fn set32(self, value: u32, field: u32) -> u32 {
        self.set(value as u64, field as u64) as u32
    }

    /// `field` (truncated to the width) shifted into place.
    pub const fn prep(self, field: u64) -> u64 {
        (field & low_mask(self.width)) << self.shift
    }
}

/// The `bits` low bits set; all 64 when `bits >= 64`.
pub const fn low_mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

/// `GENMASK_ULL(hi, lo)`: bits `hi..=lo` set. Empty when `hi < lo`; bits
/// above 63 are ignored.
pub const fn genmask(hi: u32, lo: u32) -> u64 {
    if hi < lo || lo > 63 {
        return 0;
    }
    let hi = if hi > 63 { 63 } else { hi };
    low_mask(hi + 1) & !low_mask(lo)
}

/// Extracts `width` bits of `value` starting at `shift` (clamped, never
/// panics).
pub const fn field(value: u64, shift: u32, width: u32) -> u64 {
    if shift >= 64 {
        return 0;
    }
    (value >> shift) & low_mask(width)
}

/// `value` with `width` bits at `shift` replaced by `field` (truncated;
/// bits beyond 63 are dropped, never panics).
pub const fn set_field(value: u64, shift: u32, width: u32, field: u64) -> u64 {
    if shift >= 64 {
        return value;
    }
    let mask = low_mask(width) << shift;
    (value & !mask) | ((field << shift) & mask)
}

/// `addr` with the `bits` low bits cleared (aligned down to `2^bits`).
pub const fn align_down(addr: u64, bits: u32) -> u64 {
    addr & !low_mask(bits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks() {
        assert_eq!(low_mask(0), 0);
        assert_eq!(low_mask(5), 0x1f);
        assert_eq!(low_mask(64), u64::MAX);
        assert_eq!(low_mask(200), u64::MAX);
        assert_eq!(genmask(51, 6), 0x000f_ffff_ffff_ffc0);
        assert_eq!(genmask(63, 0), u64::MAX);
        assert_eq!(genmask(3, 4), 0);
        assert_eq!(genmask(70, 60), 0xf000_0000_0000_0000);
    }

    #[test]
    fn fields() {
        let f = Field::new(12, 20);
        assert_eq!(f.mask(), 0xffff_f000);
        assert_eq!(f.get(0x1234_5678_9abc_def0), 0x9abcd);
        assert_eq!(f.set(0, 0x1_2345_6789), 0x5678_9000);
        assert_eq!(Field::bit(63).mask(), 1 << 63);
        assert_eq!(Field::new(0, 64).mask(), u64::MAX);
        assert!(Field::bit(3).is_set(8));
        assert_eq!(Field::new(24, 7).set32(0xffff_ffff, 1), 0x81ff_ffff);
        assert_eq!(field(u64::MAX, 70, 3), 0);
        assert_eq!(set_field(0, 62, 4, 0xf), 0xc000_0000_0000_0000);
        assert_eq!(set_field(7, 64, 4, 0xf), 7);
        assert_eq!(align_down(0x1fff, 12), 0x1000);
        assert_eq!(align_down(0x1fff, 80), 0);
    }
}
