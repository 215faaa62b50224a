//! [`FuzzInput`]: fixed-size values read off a fuzzer's byte string.

/// Reads a fuzzer's input front to back: little-endian integers, flags and
/// slices. Past the end it reads zeros (and empty slices), so a target
/// never has to check lengths and every input is a valid program.
#[derive(Debug, Clone, Copy)]
pub struct FuzzInput<'a>(&'a [u8]);

impl<'a> FuzzInput<'a> {
    /// Reads `data`.
    pub fn new(data: &'a [u8]) -> Self {
        FuzzInput(data)
    }

    /// The next `N` bytes, zero-padded past the end.
    pub fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        let n = N.min(self.0.len());
        out[..n].copy_from_slice(&self.0[..n]);
        self.0 = &self.0[n..];
        out
    }

    /// The next `n` bytes, or what is left.
    pub fn bytes(&mut self, n: usize) -> &'a [u8] {
        let (a, b) = self.0.split_at(n.min(self.0.len()));
        self.0 = b;
        a
    }

    /// Bytes not read yet.
    pub fn remaining(&self) -> usize {
        self.0.len()
    }

    /// The next byte.
    pub fn u8(&mut self) -> u8 {
        self.take::<1>()[0]
    }

    /// The low bit of the next byte.
    pub fn bool(&mut self) -> bool {
        self.u8() & 1 == 1
    }

    /// The next 2 bytes, little-endian.
    pub fn u16(&mut self) -> u16 {
        u16::from_le_bytes(self.take())
    }

    /// The next 4 bytes, little-endian.
    pub fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take())
    }

    /// The next 8 bytes, little-endian.
    pub fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_little_endian_then_zeros() {
        let mut i = FuzzInput::new(&[1, 2, 3, 4, 5, 6, 7]);
        assert_eq!(i.u16(), 0x0201);
        assert!(i.bool());
        assert_eq!(i.bytes(2), &[4, 5]);
        assert_eq!(i.remaining(), 2);
        assert_eq!(i.u32(), 0x0706);
        assert_eq!(i.remaining(), 0);
        assert_eq!(i.u64(), 0);
        assert!(!i.bool());
        assert_eq!(i.bytes(3), &[] as &[u8]);
        assert_eq!(i.take::<3>(), [0, 0, 0]);
    }
}
