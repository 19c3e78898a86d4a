//! Following `nextPageToken` through a Google list method.

use std::future::Future;

use super::GcpError;

/// One page of a list call: its items and the token of the next page.
pub struct Page<T> {
    pub items: Vec<T>,
    pub next_page_token: Option<String>,
}

/// Every item of a list call, page after page, through at most `max_pages`
/// pages. `fetch` gets the page token (`None` for the first page). An empty
/// or repeated token ends the list (a server that repeats one would loop).
/// The flag says whether the page limit cut the list short.
pub async fn collect_pages<T, F, Fut>(
    max_pages: usize,
    mut fetch: F,
) -> Result<(Vec<T>, bool), GcpError>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: Future<Output = Result<Page<T>, GcpError>>,
{
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..max_pages.max(1) {
        let page = fetch(token.clone()).await?;
        out.extend(page.items);
        match page.next_page_token.filter(|t| !t.is_empty()) {
            Some(t) if Some(&t) != token.as_ref() => token = Some(t),
            _ => return Ok((out, false)),
        }
    }
    Ok((out, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(items: &[u32], next: Option<&str>) -> Result<Page<u32>, GcpError> {
        Ok(Page {
            items: items.to_vec(),
            next_page_token: next.map(str::to_string),
        })
    }

    #[tokio::test]
    async fn follows_tokens_until_the_last_page_or_the_limit() {
        let pages = |t: Option<String>| async move {
            match t.as_deref() {
                None => page(&[1, 2], Some("b")),
                Some("b") => page(&[3], Some("c")),
                Some("c") => page(&[4], Some("")),
                Some(other) => panic!("unexpected token {other}"),
            }
        };
        assert_eq!(
            collect_pages(10, pages).await.unwrap(),
            (vec![1, 2, 3, 4], false)
        );
        assert_eq!(
            collect_pages(2, pages).await.unwrap(),
            (vec![1, 2, 3], true)
        );
        // A server repeating its token does not loop.
        let stuck = |_t: Option<String>| async { page(&[9], Some("same")) };
        assert_eq!(collect_pages(10, stuck).await.unwrap(), (vec![9, 9], false));
    }
}
