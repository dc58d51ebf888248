//! Pure logic of the portal: no I/O, no clock, no randomness. What the pages decide from
//! what the user's browser and the services said.

pub mod autofill;
pub mod check;
pub mod lang;
pub mod message;
pub mod sealed_handle;
pub mod setup_key;

pub use autofill::AppleAutofill;
pub use check::CheckAnswer;
pub use lang::Lang;
pub use message::UserMessage;
pub use setup_key::ShownKey;
