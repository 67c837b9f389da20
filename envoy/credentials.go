package envoy

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	credv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/credential_injector/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	genericv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/http/injected_credentials/generic/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	"github.com/aifirewall/aifirewall/processor/provider"
	"github.com/aifirewall/aifirewall/providers"
)

// Provider keys are put on requests by Envoy's credential injector, one
// filter per provider, enabled only on that provider's routes and placed
// after ext_proc: the sidecar never holds a key, so no ext_proc reply can
// carry one, and whoever speaks ext_proc learns nothing secret.
//
// Each key is a generic secret Envoy reads over SDS from a file of its own
// (SecretFiles writes them; they hold where the key is, never the key). A
// key in a file is re-read when that file's directory changes, as it does
// when a mounted Kubernetes Secret is updated (the ..data link is swapped),
// so a rotated key applies without a restart.

// credentialFilter names the injector of provider p's key.
func credentialFilter(p providers.Provider) string { return "aifirewall.credential." + p.Name }

// secretFile is the SDS file of p's key, under dir.
func secretFile(dir string, p providers.Provider) string {
	return filepath.Join(dir, "sds-"+p.Name+".yaml")
}

// hasKey says whether Envoy presents a key to p; the one-provider
// shorthand without UPSTREAM_API_KEY (a local fake upstream) has none.
func hasKey(p providers.Provider) bool { return p.APIKeyEnv != "" || p.APIKeyFile != "" }

// credentialHeader is the header p's format carries its key in, and what
// precedes the key there.
func credentialHeader(k provider.Kind) (header, prefix string) {
	if k == provider.Anthropic {
		return "x-api-key", ""
	}
	return "authorization", "Bearer "
}

// credentialFilters are the injectors, disabled unless a route enables one.
func credentialFilters(o Options, ups []providers.Provider) ([]*hcmv3.HttpFilter, error) {
	var filters []*hcmv3.HttpFilter
	for _, p := range ups {
		if !hasKey(p) {
			continue
		}
		if o.SecretDir == "" {
			return nil, errors.New("provider keys need SecretDir: the directory Envoy reads their SDS files from")
		}
		header, prefix := credentialHeader(p.Kind)
		gen, err := anypb.New(&genericv3.Generic{
			Header:            header,
			HeaderValuePrefix: prefix,
			Credential: &tlsv3.SdsSecretConfig{Name: secretName(p), SdsConfig: &corev3.ConfigSource{
				ResourceApiVersion: corev3.ApiVersion_V3,
				ConfigSourceSpecifier: &corev3.ConfigSource_PathConfigSource{PathConfigSource: &corev3.PathConfigSource{
					Path: secretFile(o.SecretDir, p),
				}},
			}},
		})
		if err != nil {
			return nil, err
		}
		f, err := anypb.New(&credv3.CredentialInjector{
			// The client's own credential was removed by the sidecar;
			// overwriting is what keeps it off if it were not.
			Overwrite: true,
			Credential: &corev3.TypedExtensionConfig{
				Name: "envoy.http.injected_credentials.generic", TypedConfig: gen},
		})
		if err != nil {
			return nil, err
		}
		filters = append(filters, &hcmv3.HttpFilter{Name: credentialFilter(p), Disabled: true,
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: f}})
	}
	return filters, nil
}

func secretName(p providers.Provider) string { return "provider-key-" + p.Name }

// SecretFiles are the SDS files the configuration reads provider keys
// through, by path (under o.SecretDir); write them beside it.
func SecretFiles(o Options) (map[string][]byte, error) {
	ups, err := providerList(o)
	if err != nil {
		return nil, err
	}
	files := map[string][]byte{}
	for _, p := range ups {
		if !hasKey(p) {
			continue
		}
		src := &corev3.DataSource{}
		if p.APIKeyFile != "" {
			src.Specifier = &corev3.DataSource_Filename{Filename: p.APIKeyFile}
			// A mounted Secret changes by swapping a link in its directory.
			src.WatchedDirectory = &corev3.WatchedDirectory{Path: filepath.Dir(p.APIKeyFile)}
		} else {
			src.Specifier = &corev3.DataSource_EnvironmentVariable{EnvironmentVariable: p.APIKeyEnv}
		}
		sec, err := anypb.New(&tlsv3.Secret{Name: secretName(p),
			Type: &tlsv3.Secret_GenericSecret{GenericSecret: &tlsv3.GenericSecret{Secret: src}}})
		if err != nil {
			return nil, err
		}
		js, err := protojson.MarshalOptions{UseProtoNames: true}.Marshal(sec)
		if err != nil {
			return nil, err
		}
		y, err := yaml.JSONToYAML([]byte(`{"resources":[` + string(js) + `]}`))
		if err != nil {
			return nil, err
		}
		files[secretFile(o.SecretDir, p)] = y
	}
	return files, nil
}

// CheckKeys checks, where Envoy will run, that every provider's key is
// there: an environment variable set, a file holding one key on one line.
// Envoy would otherwise start and send requests with an empty key.
func CheckKeys(o Options) error {
	ups, err := providerList(o)
	if err != nil {
		return err
	}
	for _, p := range ups {
		switch {
		case p.APIKeyEnv != "":
			if strings.TrimSpace(os.Getenv(p.APIKeyEnv)) == "" {
				return fmt.Errorf("provider %s: environment variable %s is not set or empty; Envoy reads the provider's key from it", p.Name, p.APIKeyEnv)
			}
		case p.APIKeyFile != "":
			if _, err := providers.ReadKeyFile(p.APIKeyFile); err != nil {
				return fmt.Errorf("provider %s: %w", p.Name, err)
			}
		}
	}
	return nil
}
