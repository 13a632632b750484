mod common;
mod errors;
mod examples;
mod run;
mod signals;
mod trace;
