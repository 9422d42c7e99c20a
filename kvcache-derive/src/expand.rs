//! The checks on the function and the registration generated for it.

use proc_macro2::{Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::ext::IdentExt;
use syn::spanned::Spanned;
use syn::{FnArg, GenericParam, Item, ReturnType, Signature, Type};

use crate::parse::Args;

/// The item unchanged, followed by its registration; on bad input, the errors and the unchanged
/// item, so that the item's own diagnostics still appear.
pub(crate) fn generator(args: TokenStream, item: TokenStream) -> TokenStream {
    match registration(args, &item) {
        Ok(registration) => quote!(#item #registration),
        Err(error) => {
            let error = error.to_compile_error();
            quote!(#error #item)
        }
    }
}

/// The `inventory::submit!` of the function's registration, or every error found in the
/// arguments and the signature.
fn registration(args: TokenStream, item: &TokenStream) -> syn::Result<TokenStream> {
    let args = syn::parse2::<Args>(args);
    let function = match syn::parse2::<Item>(item.clone())? {
        Item::Fn(function) => function,
        other => {
            return Err(syn::Error::new_spanned(
                other,
                "#[generator] applies to a function `fn name(key: &str) -> V` (or `async fn`)",
            ));
        }
    };
    let errors = args
        .as_ref()
        .err()
        .cloned()
        .into_iter()
        .chain(check(&function.sig));
    if let Some(error) = errors.reduce(|mut first, next| {
        first.combine(next);
        first
    }) {
        return Err(error);
    }
    let Args { name, krate } = args?;

    let sig = &function.sig;
    let ident = &sig.ident;
    let path = format!("::{}", ident.unraw());
    let (output, fallible) = match &sig.output {
        ReturnType::Type(_, output) if is_result(output) => (output.span(), true),
        ReturnType::Type(_, output) => (output.span(), false),
        ReturnType::Default => (sig.span(), false),
    };
    let constructor = match (sig.asyncness.is_some(), fallible) {
        (false, false) => "new",
        (false, true) => "fallible",
        (true, false) => "new_async",
        (true, true) => "fallible_async",
    };
    let constructor = Ident::new(constructor, output);
    // The call is spanned on the return type, its path included, so that an error type that is
    // no `Into<BoxError>` is reported there.
    let call_krate = respan(krate.to_token_stream(), output);
    let make = match &sig.asyncness {
        None => quote_spanned! {output=>
            || #call_krate::__private::Generator::#constructor(#ident)
        },
        // A future that is not `Send` is reported on the return type, by the constructor's
        // bound: "future cannot be sent between threads safely".
        Some(_) => quote_spanned! {output=>
            || #call_krate::__private::Generator::#constructor(
                |key: ::std::string::String| async move { #ident(&key).await }
            )
        },
    };
    Ok(quote! {
        #krate::__private::inventory::submit! {
            #krate::__private::GeneratorRegistration::new(
                #name,
                ::core::concat!(::core::module_path!(), #path),
                #make,
            )
        }
    })
}

const ONE_ARGUMENT: &str = "a generator takes one argument, the key: `fn name(key: &str) -> V`";

/// Every reason `sig` is not a plain `fn(&str) -> V`.
fn check(sig: &Signature) -> Vec<syn::Error> {
    let mut errors = Vec::new();
    let mut reject = |tokens: &dyn ToTokens, message: &str| {
        errors.push(syn::Error::new_spanned(tokens, message));
    };
    if let Some(token) = &sig.unsafety {
        reject(
            token,
            "a generator cannot be `unsafe`: containers call it as a safe `Fn(&str) -> V`",
        );
    }
    if let Some(abi) = &sig.abi {
        reject(
            abi,
            "a generator cannot have an `extern` ABI: it is a plain Rust `fn`",
        );
    }
    if let Some(variadic) = &sig.variadic {
        reject(
            variadic,
            "a generator cannot be variadic: it takes one argument, the key",
        );
    }
    for param in &sig.generics.params {
        match param {
            GenericParam::Lifetime(param) if param.bounds.is_empty() => {}
            GenericParam::Lifetime(param) => reject(
                param,
                "a generator's lifetimes cannot have bounds: its key is any `&str`",
            ),
            GenericParam::Type(_) | GenericParam::Const(_) => reject(
                param,
                "a generator cannot be generic: its container needs one concrete function",
            ),
        }
    }
    if let Some(clause) = &sig.generics.where_clause {
        reject(
            clause,
            "a generator cannot have a `where` clause: it is a plain `fn(&str) -> V`",
        );
    }

    let mut inputs = sig.inputs.iter();
    match inputs.next() {
        None => {
            // The empty parentheses, the only tokens to point at.
            let mut parens = TokenStream::new();
            sig.paren_token.surround(&mut parens, |_| {});
            reject(&parens, ONE_ARGUMENT);
        }
        Some(FnArg::Receiver(receiver)) => reject(
            receiver,
            "a generator is a free function, not a method: it cannot take `self`",
        ),
        Some(FnArg::Typed(arg)) => {
            if !is_key(&arg.ty) {
                reject(
                    &arg.ty,
                    "a generator's argument is the key, borrowed for the call: `&str` (or `&'a str`)",
                );
            }
            let extra: Vec<_> = inputs.collect();
            if !extra.is_empty() {
                reject(&quote!(#(#extra),*), ONE_ARGUMENT);
            }
        }
    }

    match &sig.output {
        ReturnType::Default => reject(
            sig,
            "a generator returns the value to cache: `-> V` or `-> Result<V, E>`",
        ),
        ReturnType::Type(_, output) => match ungroup(output) {
            Type::Tuple(unit) if unit.elems.is_empty() => {
                reject(output, "a generator returns the value to cache, not `()`")
            }
            Type::Never(_) => reject(output, "a generator returns the value to cache, not `!`"),
            Type::ImplTrait(_) => reject(
                output,
                "a generator's value type must be named: a container is asked for it as `container::<V>(name)`",
            ),
            _ if borrows(output.to_token_stream()) => reject(
                output,
                "a generator's value cannot borrow: the container stores it and returns it after \
                 the call (only `'static` references are allowed)",
            ),
            _ => {}
        },
    }
    errors
}

/// Whether `ty` is `&str` or `&'a str`: the key, borrowed for the call only.
fn is_key(ty: &Type) -> bool {
    let Type::Reference(reference) = ungroup(ty) else {
        return false;
    };
    let is_static = reference
        .lifetime
        .as_ref()
        .is_some_and(|lifetime| lifetime.ident == "static");
    let Type::Path(path) = ungroup(&reference.elem) else {
        return false;
    };
    reference.mutability.is_none()
        && !is_static
        && path.qself.is_none()
        && path.path.is_ident("str")
}

/// Whether `ty`'s last path segment is `Result` (`Result<V, E>`, `io::Result<V>`,
/// `anyhow::Result<V>`): such a function is registered with `Generator::fallible`.
fn is_result(ty: &Type) -> bool {
    match ungroup(ty) {
        Type::Path(path) => path
            .path
            .segments
            .last()
            .is_some_and(|segment| segment.ident == "Result"),
        _ => false,
    }
}

/// `ty` without the parentheses and invisible groups (from `macro_rules!`) around it.
fn ungroup(mut ty: &Type) -> &Type {
    loop {
        match ty {
            Type::Group(group) => ty = &group.elem,
            Type::Paren(paren) => ty = &paren.elem,
            _ => return ty,
        }
    }
}

/// Whether `tokens` hold a reference or a lifetime that is not `'static`.
fn borrows(tokens: TokenStream) -> bool {
    let mut tokens = tokens.into_iter().peekable();
    while let Some(token) = tokens.next() {
        let borrowed = match &token {
            TokenTree::Group(group) => borrows(group.stream()),
            // An elided lifetime: `&T`, not `&'a T`.
            TokenTree::Punct(punct) if punct.as_char() == '&' => {
                !matches!(tokens.peek(), Some(TokenTree::Punct(next)) if next.as_char() == '\'')
            }
            TokenTree::Punct(punct) if punct.as_char() == '\'' => {
                !matches!(tokens.next(), Some(TokenTree::Ident(name)) if name == "static")
            }
            _ => false,
        };
        if borrowed {
            return true;
        }
    }
    false
}

/// `tokens` (a path: no groups) with every token spanned at `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut token| {
            token.set_span(span);
            token
        })
        .collect()
}
