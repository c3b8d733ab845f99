//! A `RefCell` whose failed borrow traps instead of panicking with a formatted message. Core's
//! borrow panics format a `BorrowError`, and that formatting code (`Formatter::pad`, char
//! counting) is 1.5 KB of the npm wasm. A failed borrow is a bug either way; with std (native
//! unit tests, the web app) it still panics with a message.

use core::cell::{BorrowMutError, Ref, RefMut};

#[derive(Debug, Default)]
pub struct RefCell<T>(core::cell::RefCell<T>);

impl<T> RefCell<T> {
    pub const fn new(value: T) -> Self {
        Self(core::cell::RefCell::new(value))
    }

    pub fn borrow(&self) -> Ref<'_, T> {
        self.0.try_borrow().unwrap_or_else(|_| already_borrowed())
    }

    pub fn borrow_mut(&self) -> RefMut<'_, T> {
        self.0.try_borrow_mut().unwrap_or_else(|_| already_borrowed())
    }

    pub fn try_borrow_mut(&self) -> Result<RefMut<'_, T>, BorrowMutError> {
        self.0.try_borrow_mut()
    }
}

#[cold]
fn already_borrowed() -> ! {
    #[cfg(all(target_arch = "wasm32", not(feature = "std")))]
    core::arch::wasm32::unreachable();
    #[cfg(not(all(target_arch = "wasm32", not(feature = "std"))))]
    panic!("already borrowed");
}
