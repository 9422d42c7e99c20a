//! The arguments of `#[generator(...)]`: the container's name, then an optional `crate = path`.

use proc_macro2::Span;
use syn::parse::{Parse, ParseStream};
use syn::{LitStr, Path, Token};

/// The parsed arguments.
pub(crate) struct Args {
    /// The container's name, checked to be one the configuration can declare.
    pub(crate) name: LitStr,
    /// The path to the crate that re-exports `__private`: `::kvcache` unless `crate = path`.
    pub(crate) krate: Path,
}

const USAGE: &str = "expected `#[generator(\"name\")]` or `#[generator(\"name\", crate = path)]`";

impl Parse for Args {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        if input.is_empty() {
            return Err(syn::Error::new(
                Span::call_site(),
                format!(
                    "missing the name of the container this function generates values for: {USAGE}"
                ),
            ));
        }
        let name = match input.parse::<LitStr>() {
            Ok(name) => name,
            Err(_) => {
                let found = input.parse::<proc_macro2::TokenTree>()?;
                return Err(syn::Error::new_spanned(
                    found,
                    format!("the container's name must be a string literal: {USAGE}"),
                ));
            }
        };
        check_name(&name)?;

        let mut krate = None;
        while !input.is_empty() {
            input.parse::<Token![,]>()?;
            if input.is_empty() {
                break;
            }
            if !input.peek(Token![crate]) {
                let found = input.parse::<proc_macro2::TokenTree>()?;
                return Err(syn::Error::new_spanned(
                    &found,
                    format!("unknown argument `{found}`: {USAGE}"),
                ));
            }
            let key = input.parse::<Token![crate]>()?;
            input.parse::<Token![=]>()?;
            let path = Path::parse_mod_style(input)?;
            if krate.is_some() {
                return Err(syn::Error::new_spanned(key, "`crate` is given twice"));
            }
            krate = Some(path);
        }
        Ok(Args {
            name,
            krate: krate.unwrap_or_else(|| syn::parse_quote!(::kvcache)),
        })
    }
}

/// The configuration's rule for container names (`container.NAME.backend`): not empty, no dots,
/// no spaces around it.
fn check_name(name: &LitStr) -> syn::Result<()> {
    let value = name.value();
    if value.is_empty() || value.contains('.') || value.trim() != value {
        return Err(syn::Error::new_spanned(
            name,
            "the container's name must be one a configuration can declare as \
             `container.NAME.backend`: not empty, without dots or spaces around it",
        ));
    }
    Ok(())
}
