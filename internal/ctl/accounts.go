package ctl

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/yagura/yagura/internal/api"
	"github.com/yagura/yagura/internal/credentials"
	"github.com/yagura/yagura/internal/pki"
)

func readPassword(cmd *cobra.Command, stdin bool, prompt string) (string, error) {
	if !stdin && term.IsTerminal(int(os.Stdin.Fd())) {
		fmt.Fprint(cmd.ErrOrStderr(), prompt)
		b, err := term.ReadPassword(int(os.Stdin.Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
		return string(b), err
	}
	line, err := bufio.NewReader(cmd.InOrStdin()).ReadString('\n')
	if err != nil && err != io.EOF {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func loginCmd(g *globals) *cobra.Command {
	var user string
	var stdin bool
	cmd := &cobra.Command{
		Use:   "login",
		Short: "Sign in and keep the tokens in your config folder (mode 0600)",
		Long: `Signs in with the OAuth2 password grant and stores the access and refresh
tokens in ~/.config/yagura/credentials.json (mode 0600). Later commands use
them and refresh them when they expire. The password is never stored.`,
		Example: `  yagura ctl login --server https://manager.example:8443 --ca-fingerprint 3f9a… --user alice
  echo "$PASSWORD" | yagura ctl login --server … --ca-fingerprint … --user ci --password-stdin`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			server, fp := g.server, g.fingerprint
			if server == "" || fp == "" {
				if t, err := ResolveTarget(g.server, "x", g.fingerprint, g.credentials, g.getenv); err == nil {
					server, fp = t.URL, t.CAFingerprint
				}
			}
			if server == "" || fp == "" || user == "" {
				return fmt.Errorf("give --server, --ca-fingerprint and --user")
			}
			if _, err := pki.ParseFingerprint(fp); err != nil {
				return err
			}
			pass, err := readPassword(cmd, stdin, "Password for "+user+": ")
			if err != nil {
				return err
			}
			c, err := NewClient(Target{URL: server, CAFingerprint: fp, From: "login"})
			if err != nil {
				return err
			}
			tr, err := c.Grant(cmd.Context(), url.Values{"grant_type": {"password"}, "username": {user}, "password": {pass}, "client_id": {"yagura-ctl"}})
			if err != nil {
				return err
			}
			path, err := UserCredentialsPath()
			if err != nil {
				return err
			}
			f := &credentials.File{URL: server, CAFingerprint: fp, User: user, Token: tr.AccessToken, RefreshToken: tr.RefreshToken,
				Expires: time.Now().Add(time.Duration(tr.ExpiresIn) * time.Second)}
			if err := credentials.Save(path, f); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "Signed in to %s as %s (%s); tokens in %s\n", server, user, tr.Scope, path)
			return nil
		},
	}
	cmd.Flags().StringVar(&user, "user", "", "user name")
	cmd.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from standard input")
	return cmd
}

func logoutCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use: "logout", Short: "Revoke your tokens and forget them", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path, err := UserCredentialsPath()
			if err != nil {
				return err
			}
			f, err := credentials.Load(path)
			if err != nil {
				return fmt.Errorf("not signed in: %w", err)
			}
			c, err := NewClient(Target{URL: f.URL, CAFingerprint: f.CAFingerprint, Token: f.Token, From: path})
			if err == nil {
				err = c.RevokeToken(cmd.Context(), f.RefreshToken)
			}
			if rmErr := os.Remove(path); rmErr != nil {
				return rmErr
			}
			if err != nil {
				return fmt.Errorf("tokens forgotten here, but revoking them at the manager failed: %w", err)
			}
			fmt.Fprintln(cmd.OutOrStdout(), "Signed out.")
			return nil
		},
	}
}

func whoamiCmd(g *globals) *cobra.Command {
	return &cobra.Command{
		Use: "whoami", Short: "Show who you are signed in as", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var me api.Me
			if err := g.do(cmd, http.MethodGet, "/api/v1/me", nil, nil, &me); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), me, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "%s\t%s\n", me.Subject, me.Role)
			})
		},
	}
}

func usersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "users", Short: "People who sign in (admin only)"}
	ls := &cobra.Command{
		Use: "list", Short: "List users", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out list[api.User]
			if err := g.do(cmd, http.MethodGet, "/api/v1/users", nil, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "USERNAME\tROLE\tCREATED\tDISABLED")
				for _, u := range out.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Username, u.Role, ts(&u.CreatedAt), ts(u.DisabledAt))
				}
			})
		},
	}
	var role string
	var stdin bool
	create := &cobra.Command{
		Use: "create USERNAME", Short: "Create a user (asks for the password)", Args: cobra.ExactArgs(1),
		Example: "  yagura ctl users create alice --role operator",
		RunE: func(cmd *cobra.Command, args []string) error {
			pass, err := readPassword(cmd, stdin, "New password for "+args[0]+": ")
			if err != nil {
				return err
			}
			return g.userCall(cmd, http.MethodPost, "/api/v1/users", api.UserCreate{Username: args[0], Role: role, Password: pass})
		},
	}
	create.Flags().StringVar(&role, "role", "operator", "admin, operator or auditor")
	create.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from standard input")
	setRole := &cobra.Command{
		Use: "set-role USERNAME admin|operator|auditor", Short: "Change a user's role (signs them out)", Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.userCall(cmd, http.MethodPatch, "/api/v1/users/"+url.PathEscape(args[0]), api.UserUpdate{Role: &args[1]})
		},
	}
	setPass := &cobra.Command{
		Use: "set-password USERNAME", Short: "Change a user's password (signs them out)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			pass, err := readPassword(cmd, stdin, "New password for "+args[0]+": ")
			if err != nil {
				return err
			}
			return g.userCall(cmd, http.MethodPatch, "/api/v1/users/"+url.PathEscape(args[0]), api.UserUpdate{Password: &pass})
		},
	}
	setPass.Flags().BoolVar(&stdin, "password-stdin", false, "read the password from standard input")
	yes, no := true, false
	disable := &cobra.Command{
		Use: "disable USERNAME", Short: "Disable a user (signs them out)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.userCall(cmd, http.MethodPatch, "/api/v1/users/"+url.PathEscape(args[0]), api.UserUpdate{Disabled: &yes})
		},
	}
	enable := &cobra.Command{
		Use: "enable USERNAME", Short: "Enable a disabled user", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.userCall(cmd, http.MethodPatch, "/api/v1/users/"+url.PathEscape(args[0]), api.UserUpdate{Disabled: &no})
		},
	}
	cmd.AddCommand(ls, create, setRole, setPass, disable, enable)
	return cmd
}

func (g *globals) userCall(cmd *cobra.Command, method, path string, body any) error {
	var u api.User
	if err := g.do(cmd, method, path, nil, body, &u); err != nil {
		return err
	}
	return g.emit(cmd.OutOrStdout(), u, func(tw *tabwriter.Writer) {
		fmt.Fprintf(tw, "%s\t%s\tdisabled: %s\n", u.Username, u.Role, ts(u.DisabledAt))
	})
}

func clientsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "clients", Short: "API clients for scripts (client_credentials grant; admin only)"}
	ls := &cobra.Command{
		Use: "list", Short: "List API clients", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var out list[api.APIClient]
			if err := g.do(cmd, http.MethodGet, "/api/v1/api-clients", nil, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "CLIENT ID\tROLE\tCREATED\tEXPIRES\tREVOKED\tDESCRIPTION")
				for _, x := range out.Items {
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", x.ID, x.Role, ts(&x.CreatedAt), ts(x.ExpiresAt), ts(x.RevokedAt), dash(x.Description))
				}
			})
		},
	}
	var role, desc, expires string
	create := &cobra.Command{
		Use: "create", Short: "Create an API client (the secret is shown once)", Args: cobra.NoArgs,
		Example: `  yagura ctl clients create --role auditor --description "SIEM export" --expires 8760h
  curl -u "$CLIENT_ID:$CLIENT_SECRET" -d grant_type=client_credentials https://manager:8443/oauth/token`,
		RunE: func(cmd *cobra.Command, _ []string) error {
			var x api.APIClient
			if err := g.do(cmd, http.MethodPost, "/api/v1/api-clients", nil, api.APIClientCreate{Role: role, Description: desc, ExpiresIn: expires}, &x); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), x, func(tw *tabwriter.Writer) {
				fmt.Fprintf(tw, "client_id\t%s\nclient_secret\t%s\nrole\t%s\n", x.ID, x.Secret, x.Role)
			})
		},
	}
	create.Flags().StringVar(&role, "role", "auditor", "admin, operator or auditor")
	create.Flags().StringVar(&desc, "description", "", "what it is for")
	create.Flags().StringVar(&expires, "expires", "", `lifetime ("8760h"); empty: none`)
	revoke := &cobra.Command{
		Use: "revoke CLIENT-ID", Short: "Revoke an API client and its tokens", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := g.do(cmd, http.MethodPost, "/api/v1/api-clients/"+url.PathEscape(args[0])+"/revoke", nil, nil, nil); err != nil {
				return err
			}
			fmt.Fprintf(cmd.OutOrStdout(), "API client %s revoked.\n", args[0])
			return nil
		},
	}
	cmd.AddCommand(ls, create, revoke)
	return cmd
}

func auditCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "audit", Short: "The audit log (admin and auditor)"}
	var actor, since string
	var limit int
	ls := &cobra.Command{
		Use: "list", Short: "Show audit entries, newest first", Args: cobra.NoArgs,
		Example: "  yagura ctl audit list --actor user:alice --since 24h",
		RunE: func(cmd *cobra.Command, _ []string) error {
			q, err := auditQuery(actor, since)
			if err != nil {
				return err
			}
			q.Set("limit", strconv.Itoa(limit))
			var out struct {
				Items []api.AuditEntry `json:"items"`
			}
			if err := g.do(cmd, http.MethodGet, "/api/v1/audit", q, nil, &out); err != nil {
				return err
			}
			return g.emit(cmd.OutOrStdout(), out.Items, func(tw *tabwriter.Writer) {
				fmt.Fprintln(tw, "TIME\tACTOR\tFROM\tCALL\tRESOURCE\tSTATUS\tSUMMARY")
				for _, e := range out.Items {
					t := e.Time
					fmt.Fprintf(tw, "%s\t%s\t%s\t%s %s\t%s\t%d\t%s\n", ts(&t), e.Actor, dash(e.Remote), e.Method, e.Route, dash(e.Resource), e.Status, dash(string(e.Summary)))
				}
			})
		},
	}
	ls.Flags().StringVar(&actor, "actor", "", "only this actor (user:NAME, client:ID)")
	ls.Flags().StringVar(&since, "since", "", "only newer than this (24h)")
	ls.Flags().IntVar(&limit, "limit", 100, "at most this many")
	var format string
	export := &cobra.Command{
		Use: "export", Short: "Export the audit log as CSV or JSON lines (streamed)", Args: cobra.NoArgs,
		Example: "  yagura ctl audit export --format csv --since 720h > audit.csv",
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := g.client()
			if err != nil {
				return err
			}
			q, err := auditQuery(actor, since)
			if err != nil {
				return err
			}
			q.Set("format", format)
			resp, err := c.Stream(cmd.Context(), "/api/v1/audit/export", q)
			if err != nil {
				return err
			}
			defer resp.Body.Close()
			_, err = io.Copy(cmd.OutOrStdout(), resp.Body)
			return err
		},
	}
	export.Flags().StringVar(&format, "format", "csv", "csv or json")
	export.Flags().StringVar(&actor, "actor", "", "only this actor")
	export.Flags().StringVar(&since, "since", "", "only newer than this (720h)")
	cmd.AddCommand(ls, export)
	return cmd
}

func auditQuery(actor, since string) (url.Values, error) {
	q := url.Values{}
	if actor != "" {
		q.Set("actor", actor)
	}
	if since != "" {
		d, err := time.ParseDuration(since)
		if err != nil {
			return nil, fmt.Errorf("--since %q: want a duration such as 24h", since)
		}
		q.Set("since", time.Now().Add(-d).UTC().Format(time.RFC3339))
	}
	return q, nil
}
