#[kvcache::generator("length")]
fn length<'a>(key: &'a str) -> usize
where
    'a: 'a,
{
    key.len()
}

fn main() {}
