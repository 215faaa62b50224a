//! The one macro that declares a fixed wire structure: `#[repr(C)]`,
//! decoded in place with zerocopy, its size checked at compile time and
//! given as `SIZE`. Both the vfio-user payloads and the iommufd uAPI
//! records are declared with it.

/// Declares `pub struct $name` with public fields, `#[repr(C)]` and the
/// zerocopy derives, asserts at compile time that it is `$size` bytes, and
/// gives `$name::SIZE` = `$size` (as `u32`, the type of the size fields).
macro_rules! wire_struct {
    ($(#[$m:meta])* $name:ident { $($(#[$fm:meta])* $field:ident : $ty:ty),* $(,)? } = $size:expr) => {
        $(#[$m])*
        #[repr(C)]
        #[derive(Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout)]
        pub struct $name { $($(#[$fm])* pub $field: $ty,)* }
        const _: () = assert!(std::mem::size_of::<$name>() == $size);
        impl $name {
            /// `sizeof` the structure: the value of a leading size field
            /// (`size`, `argsz`) that covers the structure alone.
            pub const SIZE: u32 = $size;
        }
    };
}

pub(crate) use wire_struct;
