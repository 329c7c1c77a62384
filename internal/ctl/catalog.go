package ctl

import (
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/vaultd/vaultd/vaultd/catalog"
)

// cmdProvidersCatalog lists the built-in provider templates: offline, from
// the catalog compiled into this binary (the one vaultd uses). The catalog
// holds no secret, so -json prints all of it.
func cmdProvidersCatalog(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("providers catalog", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the whole catalog as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return fmt.Errorf("unexpected argument %q (usage: vaultctl providers catalog [-json])", fs.Arg(0))
	}
	all := catalog.All()
	if *asJSON {
		return printJSON(stdout, struct {
			Version   int                `json:"version"`
			Providers []catalog.Template `json:"providers"`
		}{catalog.Version(), all})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tDISPLAY NAME\tGRANT\tPARAMS\tAUTHORIZE HOST\tTOKEN HOST\tDOCS")
	for _, t := range all {
		params := make([]string, len(t.Params))
		for i, p := range t.Params {
			params[i] = p.Name
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", t.Name, t.DisplayName, t.Grant,
			dash(strings.Join(params, ",")), dash(urlHost(t.AuthorizationURL)), dash(urlHost(t.TokenURL)), t.Docs[0])
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "\ncatalog version %d, %d templates. Use one with [providers.NAME] template = \"<name>\"; "+
		"{param} hosts are filled per connection.\n", catalog.Version(), len(all))
	return nil
}

// urlHost is the host of a template URL, placeholders kept ("{shop}.myshopify.com"),
// which url.Parse would refuse.
func urlHost(u string) string {
	rest, ok := strings.CutPrefix(u, "https://")
	if !ok {
		return u
	}
	host, _, _ := strings.Cut(rest, "/")
	return host
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
